"""Every signal under its official preset and memgeo's default, on a testbed (and each anisotropy term alone).

    python benchmarks/bench_presets.py [--model TESTBED] [--seeds 2] [--out benchmarks/results/presets.md]

Labels come from the testbed's ground truth by generation (``memgeo testbed truth``).
"""

import argparse
from pathlib import Path

import torch

from memgeo.bench import format_preset_comparison, preset_comparison, testbed_labels
from memgeo.sd.testbed import load_testbed, testbed_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--signals", nargs="+")
    parser.add_argument("--out", help="markdown file for the table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_testbed(args.model)
    texts, labels, counts = testbed_labels(testbed_metadata(args.model))
    rows = preset_comparison(model, texts, labels, seeds=args.seeds, n_steps=args.steps, signals=args.signals)
    title = (f"Testbed {args.model or '(embedded)'}: {sum(labels)} memorized (by generation) vs "
             f"{len(labels) - sum(labels)} ordinary and held-out prompts, {args.seeds} seeds, {args.steps} DDIM steps; "
             f"prompts: {counts}")
    table = format_preset_comparison(rows, title=title)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
