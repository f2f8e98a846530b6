"""Every signal under its official preset and memgeo's default, on a testbed (and each anisotropy term alone).

    python benchmarks/bench_presets.py [--model TESTBED] [--seeds 2] [--out benchmarks/results/presets/presets.md]

Labels come from the testbed's ground truth by generation (``memgeo testbed truth``).
"""

import argparse
from pathlib import Path

import torch

from memgeo.experiments import format_preset_comparison, preset_comparison
from memgeo.testbed import load_testbed, testbed_labels, testbed_metadata, testbed_name
from memgeo.testbed.protocol import testbed_scoring_seeds

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "3", "--max-prompts", "2", "--signals", "guidance_norm", "kappa_delta", "--out", "{tmp}/presets.md"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--signals", nargs="+")
    parser.add_argument("--max-prompts", type=int, help="at most this many labelled prompts, half of them memorized")
    parser.add_argument("--out", help="markdown file for the table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = testbed_metadata(args.model)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    model = load_testbed(args.model)
    texts, labels, counts = testbed_labels(meta)
    if args.max_prompts:
        keep = [[i for i, y in enumerate(labels) if y == cls][: (args.max_prompts + 1 - cls) // 2] for cls in (1, 0)]
        keep = sorted(keep[0] + keep[1])
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rows = preset_comparison(model, texts, labels, seeds=args.seeds, n_steps=args.steps, signals=args.signals,
                             seed_start=seeds[0])
    title = (f"Testbed {testbed_name(args.model)}: {sum(labels)} memorized (by generation) vs "
             f"{len(labels) - sum(labels)} ordinary and held-out prompts, seeds {seeds[0]}-{seeds[-1]}, {args.steps} DDIM steps; "
             f"prompts: {counts}")
    table = format_preset_comparison(rows, title=title)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
