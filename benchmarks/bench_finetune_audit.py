"""The fine-tune audit against a LoRA fine-tune testbed's ground truth, end to end through the command line.

    python benchmarks/bench_finetune_audit.py --model FINETUNE [--seeds 4] [--signals ...] [--work DIR] [--out FILE.md]

FINETUNE is a ``memgeo testbed finetune`` folder whose ``testbed.json`` holds ground truth (``memgeo testbed truth``).
Its distinct training canvases are written as 8-bit PNGs and its labelled prompts (memorized at rate >= 0.5, not at
<= 0.1) as two prompt files; then ``memgeo scan --model BASE --lora FINETUNE --prompts mem.txt nmem.txt --labels mem
nmem --training-images PNGS`` runs the signals and the audit, as a user auditing a LoRA would. Printed: the signals'
AUROC (the scan's report, per prompt) and the audit's agreement with the ground truth (a prompt flagged where at least
half its generations copy) and the AUROC of its score (one minus the prompt's median ratio).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from memgeo.experiments.realism import append_markdown

#: The smallest setting, run by the test suite: none (it needs a fine-tune with ground truth).
SMOKE = None


def export(folder: Path, work: Path) -> tuple[Path, list[str], list[str], dict]:
    """The fine-tune's distinct training canvases as PNGs, and its labelled prompt files."""
    from PIL import Image

    from memgeo.testbed import testbed_data, testbed_labels, testbed_metadata

    data, meta = testbed_data(folder), testbed_metadata(folder)
    pngs = work / "training_images"
    pngs.mkdir(parents=True, exist_ok=True)
    for i, canvas in enumerate(data.images):
        Image.fromarray(((canvas.clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)).save(pngs / f"{i:05d}.png")
    texts, labels, counts = testbed_labels(meta)
    mem = [t for t, y in zip(texts, labels) if y == 1]
    nmem = [t for t, y in zip(texts, labels) if y == 0]
    (work / "mem.txt").write_text("\n".join(mem) + "\n")
    (work / "nmem.txt").write_text("\n".join(nmem) + "\n")
    return pngs, mem, nmem, counts


def main(argv=None) -> None:
    from memgeo.cli import main as cli
    from memgeo.detect import auroc
    from memgeo.testbed import base_folder, testbed_metadata

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a fine-tune folder with ground truth")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--signals", nargs="+", default=["guidance_norm", "anisotropy", "sharpness", "regional_sharpness"])
    ap.add_argument("--work", help="folder for the exported images, prompt files and scan results (default: temporary)")
    ap.add_argument("--out", help="append the table to this markdown file")
    args = ap.parse_args(argv)
    folder = Path(args.model)
    meta = testbed_metadata(folder)
    base = base_folder(folder)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp())
    pngs, mem, nmem, counts = export(folder, work)
    start = time.perf_counter()
    rc = cli(["scan", "--model", str(base), "--lora", str(folder), "--prompts", str(work / "mem.txt"),
              str(work / "nmem.txt"), "--labels", "mem", "nmem", "--training-images", str(pngs), "--seeds",
              str(args.seeds), "--steps", str(args.steps), "--signals", *args.signals, "--out", str(work / "scan.jsonl"),
              "--no-progress"])
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"memgeo scan failed ({rc})")
    audit = json.loads((work / "copies.json").read_text())
    by_text = {r["text"]: r for r in audit["prompts"]}
    y = np.array([1] * len(mem) + [0] * len(nmem))
    flagged = np.array([by_text[t]["copy_rate"] >= 0.5 for t in mem + nmem])
    score = np.array([1 - by_text[t]["ratio"] for t in mem + nmem])
    lines = [f"## Fine-tune audit: {folder.name} ({meta['steps']} steps) on base {meta['base']}", "",
             f"Labelled prompts: {len(mem)} memorized, {len(nmem)} not ({counts}); scan and audit with {args.seeds} "
             f"seeds, {args.steps} steps: {seconds:.0f} s on this machine.", "",
             "| audit against ground truth | value |", "|---|---|",
             f"| agreement (flagged at copy rate >= 0.5) | {float((flagged == y).mean()):.3f} |",
             f"| flagged memorized / not memorized | {int(flagged[y == 1].sum())} of {len(mem)} / "
             f"{int(flagged[y == 0].sum())} of {len(nmem)} |",
             f"| AUROC of 1 - median ratio | {auroc(y, score) if 0 < y.sum() < len(y) else float('nan'):.3f} |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_markdown(args.out, text)


if __name__ == "__main__":
    main()
