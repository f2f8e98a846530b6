"""The ``memgeo`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import format_rows, foundation_demo

    print("memgeo: closed-form geometry of Gaussian mixtures beside every estimator")
    print(f"(one noised point per mixture, sigma = 0.5; {args.probes} probes; |z| = |estimate - exact| / stderr)\n")
    print(format_rows(foundation_demo(n_probes=args.probes, seed=args.seed)))
    return 0


_LABELS = {"1": 1, "mem": 1, "memorized": 1, "0": 0, "nmem": 0, "ordinary": 0, "auto": None}


def _scan(args) -> int:
    import torch

    from .io import read_prompts
    from .scan import ScanConfig, plot_roc, run_scan, summarize

    if args.labels and len(args.labels) != len(args.prompts):
        raise ValueError(f"--labels needs one label per --prompts file ({len(args.prompts)}), got {len(args.labels)}")
    records = []
    for i, path in enumerate(args.prompts):
        recs = read_prompts(path)[: args.limit] if args.limit else read_prompts(path)
        if args.labels:
            lab = args.labels[i].lower()
            if lab not in _LABELS:
                raise ValueError(f"--labels entries must be one of {sorted(_LABELS)}, got {args.labels[i]!r}")
            if _LABELS[lab] is not None:
                for r in recs:
                    r.label = _LABELS[lab]
        records += recs
    cfg = ScanConfig(signals=tuple(args.signals), seeds=tuple(range(args.seeds)), n_steps=args.steps,
                     guidance_scale=args.guidance, anisotropy_weights=args.weights, n_directions=args.directions)
    from .sd import DiffusersScoreModel

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model = DiffusersScoreModel.from_pretrained(args.model, device=args.device, dtype=dtype, allow_download=args.allow_download)
    store = run_scan(model, records, args.out, cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate launch the main process reports
    table, metrics = summarize(store, cfg.signals)
    print(table)
    if metrics:
        png = plot_roc(metrics, Path(args.out).with_suffix(".roc.png"))
        print(f"\nROC plot: {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memgeo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="closed-form values beside every estimator on a few mixtures")
    demo.add_argument("--probes", type=int, default=256, help="probes per stochastic estimate (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    from .detect import SIGNALS

    scan = sub.add_parser("scan", help="compute memorization signals for prompt files on a checkpoint (resumable)")
    scan.add_argument("--model", required=True, help="Stable Diffusion folder (or hub id with --allow-download)")
    scan.add_argument("--prompts", nargs="+", required=True, help="prompt files: .jsonl (caption), .txt, .csv (Caption)")
    scan.add_argument("--labels", nargs="+", help="one label per prompt file: mem|1, nmem|0, or auto (from the file)")
    scan.add_argument("--signals", nargs="+", default=["guidance_norm", "anisotropy", "sharpness"], choices=sorted(SIGNALS),
                      metavar="SIGNAL", help=f"signals to compute (default: guidance_norm anisotropy sharpness; all: {' '.join(SIGNALS)})")
    scan.add_argument("--seeds", type=int, default=4, help="initial-noise seeds per prompt (default 4)")
    scan.add_argument("--out", required=True, help="results file (JSON lines; an existing one is resumed)")
    scan.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    scan.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    scan.add_argument("--weights", choices=["sd1", "sd2"], default="sd1", help="anisotropy weights (default sd1)")
    scan.add_argument("--directions", type=int, default=4, help="kappa-delta directions per step (default 4)")
    scan.add_argument("--limit", type=int, help="take at most this many prompts from each file")
    scan.add_argument("--device", default="cpu")
    scan.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="dtype of the estimator math")
    scan.add_argument("--allow-download", action="store_true", help="allow fetching a hub id (off by default)")
    scan.add_argument("--no-progress", action="store_true")
    scan.set_defaults(func=_scan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"memgeo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
