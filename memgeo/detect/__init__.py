"""Memorization signals, one module each, written once against the score-model interface.

Each signal is a plain function ``signal(model, cond, x_T, *, preset=..., ...) -> SignalResult``;
:data:`SIGNALS` is the registry (what each signal needs, whether it generates, whether it
batches, its presets), :data:`PRESETS` the settings of every published method as data, and
:mod:`~memgeo.detect.metrics` the detection metrics.
"""

from .anisotropy import anisotropy
from .bright_ending import bright_ending, bright_ending_mask
from .common import SignalResult
from .confound import caption_baseline, uppercase_fraction
from .diagnostics import BRANCH_CURVES, branch_diagnostic
from .flipd import flipd_signal, flipd_t0
from .guidance_norm import guidance_norm
from .kappa_delta import kappa_delta, kappa_delta_released
from .metrics import (
    CONVENTIONS,
    auroc,
    bootstrap_metrics,
    detection_metrics,
    roc_curve,
    tpr_at_fpr,
)
from .p_laplace import p_laplace_flux, p_laplace_released
from .presets import PRESET_NAMES, PRESETS, resolve
from .regional_sharpness import regional_sharpness
from .registry import COST_REFERENCE, DEFAULT_SIGNALS, SIGNALS, SignalOption, SignalSpec, runnable_signals
from .sharpness import sharpness
from .update_norm import update_norm
from .gap_turn import gap_turn

__all__ = [
    "SIGNALS", "SignalSpec", "SignalOption", "DEFAULT_SIGNALS", "COST_REFERENCE", "runnable_signals", "SignalResult", "PRESETS", "PRESET_NAMES", "resolve",
    "guidance_norm", "anisotropy", "sharpness", "regional_sharpness", "p_laplace_flux", "p_laplace_released", "kappa_delta",
    "kappa_delta_released", "flipd_signal", "flipd_t0", "bright_ending", "bright_ending_mask", "update_norm", "gap_turn",
    "branch_diagnostic", "BRANCH_CURVES", "caption_baseline", "uppercase_fraction",
    "auroc", "tpr_at_fpr", "roc_curve", "detection_metrics", "bootstrap_metrics", "CONVENTIONS",
]
