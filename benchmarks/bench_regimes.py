"""Testbeds side by side: the guidance gap's per-step AUROC (R1) and the signals' AUROC, per testbed.

    python benchmarks/bench_regimes.py --models A B [--names a b] [--signals kappa_delta guidance_norm] [--out FILE.md]

For each testbed folder (default: the embedded one), one generation per (prompt, seed) gives both the ground
truth (the testbed's copy criterion, :func:`memgeo.experiments.realism.measure_realism`) and the per-step gap norms; a prompt is
memorized at a rate of 0.5 or more, not memorized at 0.1 or less (its own target for a duplicated prompt, any
training image otherwise), left out in between. Each signal is then scored on the labelled prompts (its
memgeo preset, the same seeds), AUROC per prompt (mean score over seeds) with a 95% bootstrap interval.

The testbed's causal test compares the small-data regime with ``small-data-cond-only``, trained on the
same batches, noises and timesteps except that no duplicated item's caption is ever dropped: only what the
unconditional branch sees of the duplicates changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from memgeo.detect import auroc, bootstrap_metrics
from memgeo.experiments.leaderboard import evaluate_signals
from memgeo.experiments.realism import append_markdown, measure_realism, realism
from memgeo.testbed import load_testbed, testbed_data, testbed_metadata

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "4", "--uncond-seeds", "2", "--max-prompts", "8", "--signals", "guidance_norm",
         "--out", "{tmp}/regimes.md"]


def labelled(rows: list[dict]) -> tuple[list[str], list[int], list[str]]:
    """Texts, labels and kinds of the prompts with a label (rate >= 0.5 memorized, <= 0.1 not)."""
    texts, labels, kinds = [], [], []
    for r in rows:
        if r["kind"] == "memorized" and r["rate"] >= 0.5:
            lab = 1
        elif r["copy_rate"] <= 0.1 and (r["kind"] != "memorized" or r["rate"] <= 0.1):
            lab = 0
        else:
            continue
        texts.append(r["text"])
        labels.append(lab)
        kinds.append(r["memorization"] or r["kind"])
    return texts, labels, kinds


def evaluate(folder, *, seeds: int, n_steps: int, guidance_scale: float, uncond_seeds: int, signals, max_prompts=None) -> dict:
    model = load_testbed(folder)
    data = testbed_data(folder)
    prompts = data.prompts[:max_prompts] if max_prompts else data.prompts
    result = measure_realism(model, data, prompts, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                     uncond_seeds=uncond_seeds, progress=True)
    r = realism(result)
    texts, labels, kinds = labelled(result["prompts"])
    out = {"realism": r, "n_pos": sum(labels), "n_neg": len(labels) - sum(labels), "signals": {}}
    if 0 < sum(labels) < len(labels):
        for row in evaluate_signals(model, texts, labels, signals=tuple(signals), seeds=seeds, n_steps=n_steps,
                                    guidance_scale=guidance_scale, timing_repeats=1, progress=True):
            per_prompt = np.asarray(row.scores, dtype=float).reshape(len(texts), seeds).mean(1)
            y = np.asarray(labels)
            ci = bootstrap_metrics(y, per_prompt)["auroc"]
            by_kind = {}
            for k in ("matching", "template", "local"):
                m = (np.asarray(kinds) == k) | (y == 0)
                if (y[m] == 1).any():
                    by_kind[k] = auroc(y[m], per_prompt[m])
            out["signals"][row.signal] = {"auroc": auroc(y, per_prompt), "ci": list(ci), "by_kind": by_kind}
    meta = testbed_metadata(folder)
    out["settings"] = {k: meta.get(k) for k in ("steps", "final_loss", "dropout", "dropout_duplicated")}
    out["settings"]["data"] = meta["data"]
    return out


def _dup_dropout(settings: dict):
    d = settings.get("dropout_duplicated")
    return settings["dropout"] if d is None else d


def format_side_by_side(names, results, *, seeds: int) -> str:
    lines = [f"| | {' | '.join(names)} |", f"|---|{'---|' * len(names)}"]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("training", lambda r: f"{r['settings']['steps']} steps, loss {r['settings']['final_loss']:.3f}, caption dropout "
        f"{r['settings']['dropout']} (duplicated: {_dup_dropout(r['settings'])})")
    row("labelled prompts", lambda r: f"{r['n_pos']} memorized, {r['n_neg']} not")

    def r1(r):
        c = r["realism"]["R1"]
        if c is None:
            return "n/a"
        return f"min {min(c):.2f}, median {float(np.median(c)):.2f}, last ten min {min(c[-10:]):.2f}"

    row("R1: per-step gap AUROC", r1)
    row("R2: unconditional copies", lambda r: f"{100 * r['realism']['R2']['copy_rate']:.1f}%")
    for name in sorted({s for r in results for s in r["signals"]}):
        def cell(r, name=name):
            s = r["signals"].get(name)
            if s is None:
                return "n/a"
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in s["by_kind"].items())
            return f"{s['auroc']:.3f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] ({kinds})"

        row(f"{name} AUROC per prompt", cell)
    lines.append("")
    lines.append(f"{seeds} seeds per prompt; AUROC per prompt (mean over seeds) with 95% bootstrap intervals, and per "
                 "kind (that kind's memorized prompts against every non-memorized one).")
    for n, r in zip(names, results):
        if r["realism"]["R1"] is not None:
            lines.append(f"\nR1 per step, {n}: " + " ".join(f"{a:.2f}" for a in r["realism"]["R1"]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[None], help="testbed folders (default: the embedded testbed)")
    ap.add_argument("--names", nargs="+", help="column names (default: the folders)")
    ap.add_argument("--signals", nargs="+", default=["kappa_delta", "guidance_norm", "bright_ending"])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--uncond-seeds", type=int, default=128)
    ap.add_argument("--max-prompts", type=int)
    ap.add_argument("--title", default="Testbeds side by side")
    ap.add_argument("--out", help="append the table to this markdown file (and the numbers to FILE.json)")
    args = ap.parse_args(argv)
    names = args.names or [str(m or "embedded") for m in args.models]
    if len(names) != len(args.models):
        raise SystemExit("--names needs one name per --models folder")
    results = [evaluate(m, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance, uncond_seeds=args.uncond_seeds,
                        signals=args.signals, max_prompts=args.max_prompts) for m in args.models]
    text = f"## {args.title}\n\n" + format_side_by_side(names, results, seeds=args.seeds)
    print(text)
    if args.out:
        append_markdown(args.out, text)
        Path(str(args.out) + ".json").write_text(json.dumps(dict(zip(names, results)), indent=1, default=float))


if __name__ == "__main__":
    main()
