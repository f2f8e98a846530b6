"""The ``memgeo`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import format_rows, foundation_demo

    print("memgeo: closed-form geometry of Gaussian mixtures beside every estimator")
    print(f"(one noised point per mixture, sigma = 0.5; {args.probes} probes; |z| = |estimate - exact| / stderr)\n")
    print(format_rows(foundation_demo(n_probes=args.probes, seed=args.seed)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memgeo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="closed-form values beside every estimator on a few mixtures")
    demo.add_argument("--probes", type=int, default=256, help="probes per stochastic estimate (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
