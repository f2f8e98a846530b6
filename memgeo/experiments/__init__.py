"""Evaluations that ``memgeo bench`` and the benchmarks run: leaderboards, presets, trade-offs, explanation.

* :mod:`~memgeo.experiments.leaderboard` - every signal's detection metrics and cost, per kind;
* :mod:`~memgeo.experiments.trajectory` - per-step curves of trajectory tracking;
* :mod:`~memgeo.experiments.presets` - every signal under both presets;
* :mod:`~memgeo.experiments.tradeoff` - mitigation: memorization against fidelity, Pareto front;
* :mod:`~memgeo.experiments.explanation` - token attribution and localization against the testbed's truth;
* :mod:`~memgeo.experiments.realism` - whether a testbed behaves like Stable Diffusion (R1-R4);
* :mod:`~memgeo.experiments.demo` - closed-form geometry beside every estimator.
"""

from .explanation import (
    explanation_hit_rate,
    localization_auroc,
    nearest_unmemorized_captions,
)
from .leaderboard import (
    LeaderboardRow,
    caption_baseline_row,
    compare_targets,
    evaluate_signals,
    every_kind_targets,
    floor_target,
    format_breakdown,
    format_every_kind_targets,
    format_leaderboard,
    rate_correlation,
    regroup,
    run_leaderboards,
)
from .presets import format_preset_comparison, preset_comparison
from .tradeoff import (
    TARGET as MITIGATION_TARGET,
    tradeoff_configs,
    caption_fidelity,
    digit_classifier,
    fidelity_classifier,
    meets_target,
    mitigation_tradeoff,
    pareto_front,
    target_shortfalls,
    write_tradeoff,
)
from .._util import spread
from .realism import TARGETS, append_markdown, format_realism, measure_realism, realism, realism_verdicts
from .trajectory import per_step_auroc, trajectory_auroc, trajectory_traces

__all__ = [
    "LeaderboardRow", "evaluate_signals", "format_leaderboard", "caption_baseline_row", "rate_correlation", "regroup",
    "format_breakdown", "compare_targets", "floor_target", "every_kind_targets", "format_every_kind_targets", "run_leaderboards", "trajectory_traces", "per_step_auroc", "trajectory_auroc",
    "preset_comparison", "format_preset_comparison", "tradeoff_configs", "pareto_front", "mitigation_tradeoff",
    "target_shortfalls", "meets_target", "MITIGATION_TARGET",
    "write_tradeoff", "digit_classifier", "fidelity_classifier", "caption_fidelity", "nearest_unmemorized_captions", "explanation_hit_rate",
    "localization_auroc", "TARGETS", "measure_realism", "realism", "realism_verdicts", "format_realism", "append_markdown",
    "spread",
]
