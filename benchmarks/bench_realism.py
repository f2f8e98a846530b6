"""Does a testbed behave like Stable Diffusion? The realism checks R1-R4, measured by generation.

    python benchmarks/bench_realism.py [--model TESTBED] [--seeds 8] [--uncond-seeds 128] [--out FILE.md]
                                       [--criterion verbatim|replication|both]

- R1: per-step AUROC of the guidance-gap norm |eps_c - eps_u| (50 DDIM steps, w = 7.5), memorized prompts
  (target rate >= 0.5) against ordinary ones (copy rate <= 0.1), each prompt's mean over its seeds. On SD
  v1.4 (Wen et al.'s released notebook) the memorized gap stays above the ordinary one at every step.
- R2: unconditional generations (no prompt, no guidance) that copy a training image, and a duplicated one.
- R3: copy rates of ordinary and held-out prompts.
- R4: graded memorization: duplicated prompts with rates strictly between 0.1 and 0.9, and memorized prompts
  (rate >= 0.5) of each kind, by duplication count.

Ground truth is the field's criterion (:func:`memgeo.testbed.truth.nearest_ratios`: nearest / second-nearest
distinct training canvas below 1/3, Gu et al.; a local prompt's duplicated cell among the cells at its position); the traces of R1 come from the same generations. Per rung of the duplication ladder: each image's share of
the training draws, its views so far, the mean rate and the median ratio (the sweep's curve). ``--criterion
replication`` (or ``both``) also reads the same generations by the looser replication level
(:data:`memgeo.testbed.truth.REPLICATION_RATIO`: the prompt's own image nearest, ratio below 1/2), always named so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from memgeo.experiments.realism import append_markdown, format_realism, measure_realism, realism
from memgeo.testbed import load_testbed, testbed_data, testbed_metadata
from memgeo.testbed.protocol import check_disjoint, label_seeds_of, scoring_start
from memgeo.testbed.truth import CRITERIA

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "4", "--uncond-seeds", "2", "--max-prompts", "6", "--out", "{tmp}/realism.md",
         "--criterion", "both", "--json", "{tmp}/realism.json"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=int, default=8, choices=range(1, 10_000), metavar="N (>= 1)")
    ap.add_argument("--seed-start", type=int, default=None,
                    help="first seed of the generations (default: a labelled testbed's scoring seeds, 1000 on, checked "
                         "apart from its label seeds; 0 for one without ground truth, whose labels these generations "
                         "measure; a start whose seeds meet a testbed's label seeds is refused)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--uncond-seeds", type=int, default=128)
    ap.add_argument("--max-prompts", type=int, help="at most this many prompts (a quick look)")
    ap.add_argument("--title", help="heading of the table (default: the testbed's regime and steps)")
    ap.add_argument("--out", help="append the table to this markdown file")
    ap.add_argument("--json", help="write R1-R4 and the per-prompt numbers to this file")
    ap.add_argument("--criterion", choices=(*CRITERIA, "both"), default="verbatim",
                    help="the labels R1-R4 are read with (both: two tables from the same generations)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    folder = Path(args.model) if args.model else None
    meta = testbed_metadata(folder)
    if args.seed_start is None:  # scored apart from the seeds that labelled it, checked before any work
        args.seed_start = scoring_start([meta], args.seeds)
    else:
        check_disjoint(range(args.seed_start, args.seed_start + args.seeds), label_seeds_of(meta), arg="--seed-start")
    model = load_testbed(args.model)
    data = testbed_data(folder)
    prompts = data.prompts[: args.max_prompts] if args.max_prompts else data.prompts
    result = measure_realism(model, data, prompts, seed_start=args.seed_start, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance,
                     uncond_seeds=args.uncond_seeds, progress=True)
    views = meta["steps"] * meta["batch_size"]
    names = tuple(CRITERIA) if args.criterion == "both" else (args.criterion,)
    by_criterion = {name: realism(result, views=views, criterion=name) for name in names}
    regime = "finetune" if "base" in meta else "sd" if meta["data"].get("augment") else "small-data"
    title = args.title or (f"{regime} regime, {meta['steps']} steps ({len(data.images)} distinct images, "
                           f"{meta['n_training_items']} items), {args.seeds} seeds from {args.seed_start}")
    text = "\n".join(format_realism(r, title if name == "verbatim" else f"{title}, {name} level")
                      for name, r in by_criterion.items())
    print(text)
    if args.out:
        append_markdown(args.out, text)
    if args.json:
        first, *rest = names
        extra = {name: by_criterion[name] for name in rest}
        Path(args.json).write_text(json.dumps({"title": title, "steps": meta["steps"], **by_criterion[first], **extra,
                                               "raw": result}, indent=1))


if __name__ == "__main__":
    main()
