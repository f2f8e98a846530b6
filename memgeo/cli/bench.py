"""The ``bench`` command: the detector leaderboard, or the mitigation trade-off."""

from __future__ import annotations

from pathlib import Path

from .._util import check_output
from ..testbed import testbed_metadata
from ..testbed.criteria import CRITERIA
from .common import no_loading_bars, positive_int, shared_arguments


def _bench(args) -> int:
    from ..experiments.leaderboard import run_leaderboards
    from ..experiments.tradeoff import mitigation_tradeoff

    check_output(args.out, folder=True)
    if args.pool:
        return _pool(args)
    if args.no_progress:
        no_loading_bars()
    if args.mitigation:
        trained = {}
        for folder in args.trained or []:
            mit = testbed_metadata(folder).get("mitigation")
            label = f"training (filter {mit['threshold']:g})" if mit else f"training ({Path(folder).name})"
            trained[label] = folder
        mitigation_tradeoff(testbed_path=args.model, out_dir=args.out, seeds=args.seeds, n_steps=args.steps,
                            guidance_scale=args.guidance, max_prompts=args.max_prompts, progress=not args.no_progress,
                            trained=trained, criterion=args.criterion)
        return 0
    run_leaderboards(testbed_path=args.model, out_dir=args.out, seeds=args.seeds, n_steps=args.steps,
                     guidance_scale=args.guidance, max_prompts=args.max_prompts, mixture_conditions=args.mixture_conditions,
                     progress=not args.no_progress, criterion=args.criterion)
    return 0


def _pool(args) -> int:
    import json

    from .._util import atomic_write_text
    from ..experiments.pool import check_poolable, format_pooled, pool_leaderboards, read_leaderboard
    from ..plotting import plot_rank_stability

    check_poolable([read_leaderboard(folder) for folder in args.pool])  # every input checked before any work
    table = pool_leaderboards(args.pool)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    text = format_pooled(table)
    atomic_write_text(out / "pooled.md", text + "\n")
    atomic_write_text(out / "pooled.json", json.dumps(table, indent=1))
    plot_rank_stability(table["rank_stability"], out / "rank_stability.png")
    print(text)
    print(f"\nwrote {out / 'pooled.md'}, {out / 'pooled.json'} and {out / 'rank_stability.png'}")
    return 0


def register(sub) -> None:
    bench = sub.add_parser("bench", help="leaderboard of every signal on the mixture and the testbed")
    shared_arguments(bench, model=dict(help="testbed folder (default: the embedded testbed)"), seeds={}, steps={},
                     guidance={}, out=dict(default="bench_results", help="folder for tables and plots"), no_progress={})
    bench.add_argument("--mixture-conditions", type=positive_int, default=20, help="memorized and generalizing mixture conditions each")
    bench.add_argument("--trained", action="append", metavar="FOLDER",
                       help="with --mitigation: a testbed trained with mitigation (testbed train --mitigate-threshold), "
                            "generated from plainly beside the inference-time methods (repeatable)")
    bench.add_argument("--max-prompts", type=positive_int, help="evaluate at most this many testbed prompts (half memorized)")
    bench.add_argument("--criterion", choices=tuple(CRITERIA), default="verbatim",
                       help="the testbed's labels: verbatim copies (the default) or the looser replication level, "
                            "whose leaderboard names it")
    bench.add_argument("--mitigation", action="store_true", help="the mitigation trade-off instead of the detector leaderboard")
    bench.add_argument("--pool", nargs="+", metavar="FOLDER",
                       help="pool the leaderboards in these folders (each a `memgeo bench --out` of one model): per signal "
                            "the mean prompt-level AUROC over models, with intervals over models and prompts; columns "
                            "all, hard negatives, per kind; Kendall's tau across models; the detection targets on the "
                            "pooled AUROCs and on each model's")
    bench.set_defaults(func=_bench)
