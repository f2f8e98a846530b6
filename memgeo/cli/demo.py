"""The ``demo`` command: closed-form geometry beside every estimator."""

from __future__ import annotations

from .common import positive_int


def _demo(args) -> int:
    from ..experiments.demo import format_rows, foundation_demo

    print("memgeo: closed-form geometry of Gaussian mixtures beside every estimator")
    print(f"(one noised point per mixture, sigma = 0.5; {args.probes} probes; |z| = |estimate - exact| / stderr)\n")
    print(format_rows(foundation_demo(n_probes=args.probes, seed=args.seed)))
    return 0


def register(sub) -> None:
    demo = sub.add_parser("demo", help="closed-form values beside every estimator on a few mixtures")
    demo.add_argument("--probes", type=positive_int, default=256, help="probes per stochastic estimate (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
