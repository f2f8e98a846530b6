"""Memorization signals and detection metrics, written once against the score-model interface."""

from .metrics import CONVENTIONS, auroc, bootstrap_metrics, detection_metrics, roc_curve, tpr_at_fpr
from .sampling import SampleResult, StepState, ddim_sample, guidance_pair, initial_noise
from .leaderboard import (
    LeaderboardRow,
    caption_baseline_row,
    evaluate_signals,
    format_breakdown,
    format_leaderboard,
    rate_correlation,
    regroup,
)
from .presets import PRESET_NAMES, PRESETS
from .diagnostics import BRANCH_CURVES, branch_diagnostic
from .signals import (
    ANISOTROPY_WEIGHTS,
    GENERATION_SIGNALS,
    GUIDED_SIGNALS,
    SIGNALS,
    GuidanceNormTracker,
    KappaDeltaTracker,
    SignalResult,
    anisotropy,
    combined_score,
    flipd_signal,
    flipd_t0,
    ProbeCosineTracker,
    guidance_alignment,
    guidance_norm,
    kappa_delta,
    p_laplace_flux,
    sharpness,
)

__all__ = [
    "auroc", "tpr_at_fpr", "roc_curve", "detection_metrics", "bootstrap_metrics", "CONVENTIONS",
    "ddim_sample", "guidance_pair", "initial_noise", "StepState", "SampleResult",
    "LeaderboardRow", "evaluate_signals", "format_leaderboard", "caption_baseline_row", "rate_correlation", "regroup",
    "format_breakdown", "GENERATION_SIGNALS", "GUIDED_SIGNALS",
    "SignalResult", "SIGNALS", "ANISOTROPY_WEIGHTS", "guidance_norm", "guidance_alignment", "anisotropy", "sharpness",
    "p_laplace_flux", "kappa_delta", "flipd_signal", "flipd_t0", "combined_score", "PRESETS", "PRESET_NAMES", "KappaDeltaTracker", "ProbeCosineTracker", "GuidanceNormTracker",
    "branch_diagnostic", "BRANCH_CURVES",
]
