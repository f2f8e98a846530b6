"""Settings of every published mitigation, as data: the paper's released code (``"official"``) and memgeo's default.

As for the signals (:mod:`memgeo.detect.presets`): one table row per preset; an argument the caller gives explicitly
wins, anything left as ``None`` comes from the preset (docs/conventions.md, section 4).
"""

from __future__ import annotations

from .._util import PRESET_NAMES, resolve_preset

__all__ = ["PRESETS", "PRESET_NAMES", "resolve"]

PRESETS: dict[str, dict[str, dict]] = {
    # Wen et al. 2024 inference-time mitigation (prompt-embedding adaptation)
    "adapt_embedding": {
        "memgeo": {"optimizer": "adam", "lr": 0.05, "max_iters": 30, "target": None, "relative_target": 0.5,
                   "loss": "mean", "freeze_start_token": False},
        "official": {"optimizer": "adamw", "lr": 0.05, "max_iters": 10, "target": 3.0, "relative_target": None,
                     "loss": "frobenius", "freeze_start_token": True},
    },
    # Brokman et al., NeurReps 2025 mid-generation steering: a flagged sample gets ``low_guidance`` from step
    # ``act_from`` (a fraction of the steps) on. memgeo: repel (negative guidance) in the second half, once the
    # image's layout is fixed, so the caption's content stays and the copied details go; official: guidance off
    # from the flag on.
    "steer": {
        "memgeo": {"threshold": 3.0, "low_guidance": -4.0, "act_from": 0.5},
        "official": {"threshold": 3.0, "low_guidance": 0.0, "act_from": 0.0},
    },
    # Jain et al., CVPR 2025 (SonyResearch/mitigating_memorization): guidance ``inside`` the attraction basin until
    # the gap norm's first local minimum, full guidance after. official: generate_test_dataset_dtp.py (w = 1 before,
    # no bound); memgeo: opposite guidance (w = -2, the README's static opposite-guidance command), forced by half way
    "basin": {
        "memgeo": {"inside": -2.0, "force_at": 0.5},
        "official": {"inside": 1.0, "force_at": None},
    },
    # Jeon et al. 2025 SAIL initial-noise optimization, as released with the anisotropy code
    "optimize_noise": {
        "memgeo": {"objective": "sharpness", "lr": 0.05, "max_iters": 20, "threshold": None, "penalty": 1.0},
        "official": {"objective": "sail", "lr": 0.05, "max_iters": 10, "threshold": 8.2, "penalty": "auto",
                     "max_rounds": 30},
    },
}


def resolve(name: str, preset: str, **given) -> dict:
    """The options of the mitigation ``name`` under ``preset``, overridden by every ``given`` value that is not None."""
    return resolve_preset(PRESETS, name, preset, **given)
