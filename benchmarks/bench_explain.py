"""Explanation and localization on a testbed (the embedded one by default).

(a) Token attribution: over every memorized-by-construction prompt, how often the top-ranked token
    is one that tells the caption from its nearest non-memorized caption (the captions seen once
    in training), for the gradient on the input token embeddings, the gradient on the prompt
    embedding rows (Wen et al.'s released code) and leave-one-out; chance level beside; the mean
    Spearman correlation of each gradient ranking with leave-one-out.
(b) Localization: pixel AUROC of the variance-collapse map and of two baselines (the end-token cross-attention
    map, bright ending's mask) against the masks of the local-memorization prompts, over all of them and over those
    memorized by generation (rate >= 0.5); the map's AUROC at every DDIM step is plotted.
(c) The targets: the gradient attribution's hit rate at least twice chance (leave-one-out, the reference, aside); the map's localization AUROC at least 0.9 and
    above both baselines (over every local prompt).

    python benchmarks/bench_explain.py [--model TESTBED] --out benchmarks/results/explain_sd_bench/primary_1

Generations from the scoring seeds (1000 on), apart from the seeds that labelled the testbed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memgeo.experiments import explanation_hit_rate, localization_auroc
from memgeo.plotting import save_figure
from memgeo.testbed import load_testbed, testbed_data, testbed_metadata
from memgeo.testbed.labels import memorization_rate
from memgeo.testbed.protocol import SCORING_SEED_START, check_disjoint, label_seeds_of


def _mean_ci(values, n_boot: int = 2000, seed: int = 0) -> str:
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return f"{v.mean():.3f} [{lo:.2f}, {hi:.2f}]"


#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = None  # the smallest run still attributes every memorized testbed prompt: minutes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="testbed folder (default: the embedded one)")
    ap.add_argument("--out", required=True, help="folder for explain.md, explain.json and the figure "
                                                 "(benchmarks/results/explain_sd_bench/RUN for a protocol model)")
    ap.add_argument("--seeds", type=int, default=8, help="seeds of the localization maps (attribution uses 4)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed-start", type=int, default=SCORING_SEED_START,
                    help="first seed of the noises (default: the scoring seeds, 1000 on; refused where they meet the "
                         "testbed's label seeds)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = testbed_metadata(args.model)
    check_disjoint(range(args.seed_start, args.seed_start + max(args.seeds, 4)), label_seeds_of(meta),
                   arg="--seed-start")  # before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = load_testbed(args.model), testbed_data(args.model)

    hits = explanation_hit_rate(model, data, n_steps=args.steps, seed_start=args.seed_start)
    rows = hits["rows"]
    lines = [f"**token attribution on the testbed: {hits['n_prompts']} memorized prompts, guidance norm at the first "
             f"of {args.steps} DDIM steps, 4 seeds from {args.seed_start}**", "",
             "| attribution | top token distinguishes from the nearest non-memorized caption | local prompts: top token "
             "names the duplicated cell | Spearman with leave-one-out |", "|---|---|---|---|"]
    for name, label, rho in (("gradient_input", "gradient, input token embeddings", "spearman_input"),
                             ("gradient_output", "gradient, prompt-embedding rows (Wen et al.)", "spearman_output"),
                             ("leave_one_out", "leave one token out", None)):
        local = [r[name + "_local"] for r in rows if name + "_local" in r]
        lines.append(f"| {label} | {_mean_ci([r[name] for r in rows])} | {_mean_ci(local)} | "
                     f"{'-' if rho is None else f'{hits[rho]:.3f}'} |")
    lines.append(f"| chance | {hits['chance']:.3f} | {hits['local_chance']:.3f} | - |")
    by_text = {p["text"]: p for p in meta["prompts"]}
    lines += ["", "By the ground truth (the prompts above split by their verbatim rate):", "",
              "| prompts | n | gradient, input | gradient, prompt-embedding rows | leave one out | chance |",
              "|---|---|---|---|---|---|"]
    for name, sel in (("memorized by generation (rate >= 0.5)", lambda r: r >= 0.5),
                      ("not memorized by generation (rate <= 0.1)", lambda r: r <= 0.1)):
        sub = [r for r in rows if r["text"] in by_text and sel(memorization_rate(by_text[r["text"]]))]
        if sub:
            lines.append(f"| {name} | {len(sub)} | " + " | ".join(_mean_ci([r[k] for r in sub]) for k in
                         ("gradient_input", "gradient_output", "leave_one_out")) + f" | {np.mean([r['chance'] for r in sub]):.3f} |")
    lines += ["", "Brackets: 95% bootstrap intervals over prompts. Nearest non-memorized captions: "
                  f"{np.mean([r['distance'] for r in rows]):.2f} of 8 words differ on average, "
                  f"{np.mean([r['n_neighbours'] for r in rows]):.1f} tied neighbours per prompt."]

    local = [p for p in meta["prompts"] if p.get("memorization") == "local"]
    loc = localization_auroc(model, local, seeds=args.seeds, n_steps=args.steps, seed_start=args.seed_start)
    lines += ["", f"**localization on the testbed: {len(local)} local-memorization prompts, {args.seeds} seeds from "
                  f"{args.seed_start}, "
                  f"map at step {loc[0]['step']} of {args.steps} (signal-to-noise ratio 1)**", "",
              "| prompts | n | variance-collapse map (pixel AUROC) | cross-attention, end token, last step | "
              "bright ending's mask |", "|---|---|---|---|---|"]
    for name, sel in (("all local prompts", lambda r: True), ("memorized by generation (rate >= 0.5)", lambda r: r["rate"] >= 0.5),
                      ("not memorized by generation (rate < 0.5)", lambda r: r["rate"] < 0.5)):
        sub = [r for r in loc if sel(r)]
        if sub:
            lines.append(f"| {name} | {len(sub)} | {_mean_ci([r['map'] for r in sub])} | "
                         f"{_mean_ci([r['cross_attention'] for r in sub])} | {_mean_ci([r['bright_ending'] for r in sub])} |")
    best = max(np.mean([r["gradient_input"] for r in rows]), np.mean([r["gradient_output"] for r in rows]))
    m, ca, be = (np.mean([r[k] for r in loc]) for k in ("map", "cross_attention", "bright_ending"))
    lines += ["", "| target | measured | met |", "|---|---|---|",
              f"| attribution hit rate >= 2x chance ({2 * hits['chance']:.3f}), the better gradient | {best:.3f} | "
              f"{'yes' if best >= 2 * hits['chance'] else 'no'} |",
              f"| localization >= 0.9 and above both baselines | {m:.3f} (cross-attention {ca:.3f}, bright ending "
              f"{be:.3f}) | {'yes' if m >= 0.9 and m > max(ca, be) else 'no'} |"]
    table = "\n".join(lines)
    print(table)
    (out / "explain.md").write_text(table + "\n")
    (out / "explain.json").write_text(json.dumps({"attribution": hits, "localization": loc}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    steps = np.arange(args.steps)
    for name, sel in (("rate >= 0.5", lambda r: r["rate"] >= 0.5), ("all", lambda r: True)):
        ax.plot(steps, np.mean([r["per_step"] for r in loc if sel(r)], 0), label=f"map, {name}")
    ax.axvline(loc[0]["step"], color="k", ls=":", lw=0.8, label="SNR = 1 (default step)")
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xlabel("DDIM step")
    ax.set_ylabel("pixel AUROC against the mask")
    ax.legend(fontsize=7)
    save_figure(fig, out / "localization_auroc_by_step.png", dpi=120)
    print(f"wrote {out / 'explain.md'}, {out / 'explain.json'} and {out / 'localization_auroc_by_step.png'}")


if __name__ == "__main__":
    main()
