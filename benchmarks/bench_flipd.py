"""FLIPD's probe time on a testbed: the rule from the scanned prompts against the former nonce-prompt rule.

    python benchmarks/bench_flipd.py [--model TESTBED] [--seeds 4] [--out benchmarks/results/flipd_probe_time/flipd.md]

For each rule, the probe time t0 chosen without labels, the fraction of the scanned samples whose
LID at t0 is at most the ambient dimension d (the estimator's valid range), and FLIPD's AUROC per
prompt, overall and per kind of memorization (that kind's memorized prompts against every
non-memorized prompt), with 95% bootstrap intervals. Below the table: the quantiles of the
reference batch's LID at every candidate timestep (the LID-versus-t curve the rule reads).
"""

from __future__ import annotations

import argparse
import math
import random
import string
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import auroc, bootstrap_metrics, flipd_signal, flipd_t0
from memgeo.detect.flipd import local_intrinsic_dimension
from memgeo.experiments import spread
from memgeo.sampling import ddim_sample, initial_noise
from memgeo.testbed import load_testbed, testbed_kinds, testbed_labels, testbed_metadata, testbed_name
from memgeo.testbed.protocol import testbed_scoring_seeds

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "4", "--max-prompts", "4", "--references", "2", "--out", "{tmp}/flipd.md"]


def nonce_prompts(n: int, seed: int = 0) -> list[str]:
    """The former default reference: four random lowercase letter strings per prompt (outside any caption grammar)."""
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(4))
            for _ in range(n)]


def lid_curve(model, reference, *, n_steps: int, guidance_scale: float, seed: int = 0) -> list[tuple[int, list[float]]]:
    """The LID quantiles (50, 90, 100%) of the reference batch at every candidate timestep, as the rule computes them."""
    x0 = [ddim_sample(model, c, initial_noise(model, [1000 + seed + i]), n_steps=n_steps,
                      guidance_scale=guidance_scale).denoised for i, c in enumerate(reference)]
    T = model.schedule.num_train_timesteps
    rows = []
    for t in sorted(int(t) for t in model.timesteps(n_steps) if int(t) <= T // 2):
        lid = torch.cat([local_intrinsic_dimension(model, c, x, t, "hutchinson_fd", 8, torch.Generator().manual_seed(seed)).value
                         for c, x in zip(reference, x0)]).double()
        rows.append((t, [float(torch.quantile(lid, q)) for q in (0.5, 0.9, 1.0)]))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--max-prompts", type=int, help="at most this many labelled prompts, half of them memorized")
    ap.add_argument("--references", type=int, default=32, help="reference prompts of each rule (default 32, as flipd_t0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="markdown file for the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = testbed_metadata(args.model)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    model = load_testbed(args.model)
    texts, labels, _ = testbed_labels(meta)
    if args.max_prompts:
        keep = sorted([i for i, y in enumerate(labels) if y == 1][: args.max_prompts // 2]
                      + [i for i, y in enumerate(labels) if y == 0][: args.max_prompts - args.max_prompts // 2])
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    kinds = np.array(testbed_kinds(meta, texts))
    y = np.asarray(labels)
    x_T = initial_noise(model, seeds)
    d = math.prod(model.event_shape)
    rules = {"scanned prompts, every reference LID <= d (memgeo)": (texts, args.references, 1.0),
             "scanned prompts, 90% quantile of 16": (texts, min(16, args.references), 0.9),
             "nonce prompts, 90% quantile of 16 (former default)": (nonce_prompts(16), min(16, args.references), 0.9)}
    lines = [f"Testbed {testbed_name(args.model)}: {int(y.sum())} memorized and {int((1 - y).sum())} not memorized "
             f"prompts (by generation), seeds {seeds[0]}-{seeds[-1]}, {args.steps} DDIM steps, d = {d}. AUROC per prompt "
             "(score = -LID, mean over seeds), 95% bootstrap intervals; per kind: that kind's memorized prompts "
             "against every non-memorized prompt.", "",
             "| reference of the probe-time rule | t0 | samples with LID <= d | AUROC | matching | template | local |",
             "|---|---|---|---|---|---|---|"]
    curves, measured = {}, {}
    for rule, (reference, n_ref, quantile) in rules.items():
        t0 = flipd_t0(model, reference, guidance_scale=args.guidance, n_steps=args.steps, n_reference=n_ref,
                      quantile=quantile)
        if t0 not in measured:  # rules that agree on t0 share one measurement
            scores, inside = [], []
            for i, c in enumerate(texts):
                res = flipd_signal(model, c, x_T, t=t0, n_steps=args.steps, guidance_scale=args.guidance,
                                   generator=torch.Generator().manual_seed(i))
                scores.append(res.score.double().numpy())
                inside.append((res.value <= d).numpy())
            measured[t0] = scores, inside
        scores, inside = measured[t0]
        s = np.stack(scores).mean(1)
        cells = []
        for kind in (None, "matching", "template", "local"):
            sel = (y == 0) | ((y == 1) & ((kinds == kind) if kind else True))
            if len(set(y[sel])) < 2:
                cells.append("-")
                continue
            ci = bootstrap_metrics(y[sel], s[sel])["auroc"]
            cells.append(f"{auroc(y[sel], s[sel]):.3f} [{ci[0]:.2f}, {ci[1]:.2f}]")
        lines.append(f"| {rule} | {t0} | {np.concatenate(inside).mean():.3f} | " + " | ".join(cells) + " |")
        if quantile == 1.0:
            curves[rule] = lid_curve(model, spread(list(reference), n_ref), n_steps=args.steps,
                                     guidance_scale=args.guidance)
    for rule, rows in curves.items():
        lines += ["", f"LID of the reference batch against t, reference: {rule} (quantiles 50%, 90%, 100%; d = {d})", "",
                  "| t | " + " | ".join(str(t) for t, _ in rows[:12]) + " |", "|---|" + "---|" * len(rows[:12])]
        for k, name in enumerate(("50%", "90%", "max")):
            lines.append(f"| {name} | " + " | ".join(f"{q[k]:.0f}" for _, q in rows[:12]) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
