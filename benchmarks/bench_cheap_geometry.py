"""memgeo's geometry at a small budget: every candidate reading of the guidance gap over the first sampler steps,
beside the published signals at <= 4 evaluations, per prompt, with bootstrap intervals.

    python benchmarks/bench_cheap_geometry.py [--model TESTBED] [--criterion verbatim] [--seeds 4]
        --out benchmarks/results/cheap_geometry/NAME_CRITERION.md

Each prompt is generated from scoring seeds (from 1000, apart from the label seeds) for the first 8 sampler steps of
the classifier-free-guided DDIM generation (w = 7.5, 50 steps); the gaps g_i = eps_c - eps_u of those steps (the
generation computes them) give every candidate: norms, turns (1 - cos between consecutive gaps), their products,
at 2 (i + 1) evaluations for the gaps of steps 0..i. Every candidate tried is printed, so that the choice is visible;
``gap_turn`` (memgeo.detect.gap_turn, k = 1: |g_0| (1 - cos(g_0, g_1)), 4 evaluations) was chosen on the earlier embedded
testbed's replication labels and is then read unchanged on other models. Per-prompt AUROC (the mean score over its
seeds), memorized against every not-memorized prompt, against the hard negatives only (duplicated, never a replica),
and per kind, each with a 95% bootstrap interval over prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import SIGNALS, auroc
from memgeo.detect.gap_turn import GapTracker, gap_turns
from memgeo.sampling import ddim_sample, initial_noise
from memgeo.testbed import KINDS, load_testbed, testbed_labels, testbed_metadata, testbed_name
from memgeo.testbed.labels import is_hard_negative
from memgeo.testbed.protocol import testbed_scoring_seeds

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder).
SMOKE = ["--seeds", "1", "--max-prompts", "6", "--bootstrap", "20", "--out", "{tmp}/cheap.md"]

#: The registry's signals at <= 4 evaluations per sample (the front's budget), beside them: the published ones, and
#: memgeo's regional sharpness (labelled by the registry's ``own``); the update norm at its 3 steps (6 alone).
REGISTERED = ("guidance_norm", "sharpness", "anisotropy", "regional_sharpness", "update_norm")


def candidates(G: torch.Tensor) -> dict:
    """Every reading tried, from the gaps ``G`` ``[steps, S, d]``: ``{name (evaluations): [S]}``."""
    N, C, T = gap_turns(G)
    out = {"|g0| (2)": N[0], "|g1| (4)": N[1], "|g1|/|g0| (4)": N[1] / N[0], "|g1 - g0| (4)": (G[1] - G[0]).norm(dim=1),
           "turn 1 - cos(g0, g1) (4)": 1 - C[0], "|g1| (1 - cos) (4)": N[1] * (1 - C[0]),
           "|g0| (1 - cos) = gap_turn (4)": T[0], "turn 1 - cos(g1, g2) (6)": 1 - C[1]}
    for k in (2, 3, 5, 7):
        out[f"mean |g_i| (1 - cos), i < {k} ({2 * (k + 1)})"] = T[:k].mean(0)
        out[f"mean (1 - cos), i < {k} ({2 * (k + 1)})"] = (1 - C[:k]).mean(0)
    return out


def interval(y: np.ndarray, s: np.ndarray, rng: np.random.Generator, n: int) -> tuple[float, float, float]:
    """AUROC and its 95% bootstrap interval over prompts (resamples keeping both classes)."""
    a = auroc(y, s)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = [auroc(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                   np.r_[s[rng.choice(pos, len(pos))], s[rng.choice(neg, len(neg))]]) for _ in range(n)]
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
    return float(a), float(lo), float(hi)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="testbed folder (default: the embedded one)")
    ap.add_argument("--criterion", default="verbatim", choices=("verbatim", "replication"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--max-prompts", type=int, default=None, help="keep this many labelled prompts (both classes)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", required=True, help="markdown file, its .json beside it "
                                                 "(benchmarks/results/cheap_geometry/NAME_CRITERION.md)")
    args = ap.parse_args(argv)
    meta = testbed_metadata(args.model)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    texts, labels, _ = testbed_labels(meta, criterion=args.criterion)
    if args.max_prompts is not None:
        pos = [i for i, y in enumerate(labels) if y][: args.max_prompts // 2]
        neg = [i for i, y in enumerate(labels) if not y][: args.max_prompts - len(pos)]
        keep = sorted(pos + neg)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    by = {p["text"]: p for p in meta["prompts"]}

    def hard_negative(p):
        try:
            return is_hard_negative(p)
        except ValueError:  # a ground truth without replication rates names none
            return False

    model = load_testbed(args.model)
    x_T = initial_noise(model, seeds)
    scores: dict = {}
    for t in texts:
        res = ddim_sample(model, t, x_T, n_steps=50, guidance_scale=7.5, stop_after=8, trackers={"gap": GapTracker()})
        row = candidates(res.trace["gap"].double())
        for name in REGISTERED:
            r = SIGNALS[name](model, t, x_T, **SIGNALS[name].options(n_steps=50, guidance_scale=7.5))
            row[f"{'memgeo' if SIGNALS[name].own else 'published'}: {name} ({r.n_evals})"] = r.score.double()
        for k, v in row.items():
            scores.setdefault(k, []).append(float(v.mean()))
    y = np.array(labels)
    hard = np.array([hard_negative(by[t]) for t in texts])
    kinds = np.array([by[t].get("memorization") or "" for t in texts])
    rng = np.random.default_rng(0)
    rows = []
    for name, s in scores.items():
        s = np.array(s)
        cols = {"all": interval(y, s, rng, args.bootstrap)}
        if hard.any():
            m = (y == 1) | hard
            cols["hard negatives"] = interval(y[m], s[m], rng, args.bootstrap)
        for kind in KINDS:
            m = ((kinds == kind) & (y == 1)) | (y == 0)
            if (y[m] == 1).any():
                cols[kind] = interval(y[m], s[m], rng, args.bootstrap)
        rows.append((name, cols))
    rows.sort(key=lambda r: -r[1]["all"][0])
    heads = list(rows[0][1])
    lines = [f"{int(y.sum())} memorized against {int((y == 0).sum())} not memorized prompts ({int(hard.sum())} hard "
             f"negatives), {args.criterion} labels; {len(seeds)} scoring seeds from {seeds[0]}; model: "
             f"{testbed_name(args.model)}. Per-prompt AUROC [95% bootstrap interval].", "",
             "| reading (evaluations) | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, cols in rows:
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in cols.values()) + " |")
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"settings": vars(args), "seeds": seeds, "texts": texts,
                                                    "labels": labels, "scores": scores}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
