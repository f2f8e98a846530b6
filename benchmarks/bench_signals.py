"""Every memorization signal: detection on the canonical mixture, and cost on the tiny SD pipeline.

(a) On ``ConditionalGaussianMixture.memorization_scenario`` (exact scores): AUROC, TPR@1%FPR and
    TPR@3%FPR (strict) of every signal, memorized vs generalizing conditions, one score per
    (condition, seed).
(b) On the tiny offline Stable Diffusion pipeline (built in a temporary folder and loaded through
    ``from_pretrained``): UNet evaluations, JVPs and wall time per prompt of every signal, as
    ratios to the guidance norm measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from memgeo.detect import SIGNALS
from memgeo.experiments import evaluate_signals, format_leaderboard
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sampling import initial_noise


def mixture_table(n_conditions: int, seeds: int, n_steps: int, dim: int) -> str:
    mix = ConditionalGaussianMixture.memorization_scenario(dim=dim, n_memorized=n_conditions, n_generalizing=n_conditions, seed=0)
    rows = evaluate_signals(mix, list(range(mix.n_conditions)), mix.memorized.int().tolist(), seeds=seeds, n_steps=n_steps)
    return format_leaderboard(rows, title=f"canonical memorization mixture (d={dim}, {n_conditions}+{n_conditions} conditions, "
                                          f"{seeds} seeds, {n_steps} DDIM steps, w=7.5)")


def pipeline_costs(n_prompts: int, seeds: int, n_steps: int) -> str:
    from memgeo.models import DiffusersScoreModel, build_tiny_pipeline

    prompts = [f"a small test prompt number {i}" for i in range(n_prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        model = DiffusersScoreModel.from_pretrained(build_tiny_pipeline(f"{tmp}/tiny", "epsilon"))
    x_T = initial_noise(model, seeds)
    SIGNALS["guidance_norm"](model, prompts[0], x_T)  # warm-up
    rows = []
    for name, fn in SIGNALS.items():
        kw = {"n_steps": n_steps}
        if SIGNALS[name].generates:
            kw["generator"] = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        before = model.n_unet_rows
        for p in prompts:
            res = fn(model, p, x_T, **kw)
        dt = (time.perf_counter() - t0) / n_prompts
        rows.append((name, res.n_evals, res.n_jvps, (model.n_unet_rows - before) / (n_prompts * seeds), dt))
    base_evals, base_t = rows[0][1], rows[0][4]
    lines = [f"**tiny SD pipeline (UNet (32, 64) channels, 4x8x8 latents, CPU), {seeds} seeds per prompt, {n_steps} DDIM steps**", "",
             "| signal | UNet evals/sample | JVPs/sample | UNet rows counted/sample | s/prompt | evals / guidance norm | time / guidance norm |",
             "|---|---|---|---|---|---|---|"]
    for name, ev, jv, counted, dt in rows:
        lines.append(f"| {name} | {ev} | {jv} | {counted:.0f} | {dt:.3f} | {ev / base_evals:.0f} | {dt / base_t:.1f} |")
    return "\n".join(lines)


#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--conditions", "2", "--seeds", "2", "--steps", "3", "--prompts", "1"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conditions", type=int, default=20, help="memorized and generalizing conditions each")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    args = ap.parse_args(argv)
    print(mixture_table(args.conditions, args.seeds, args.steps, args.dim))
    print()
    print(pipeline_costs(args.prompts, min(args.seeds, 4), args.steps))


if __name__ == "__main__":
    main()
