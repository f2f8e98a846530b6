"""Settings of every published mitigation, as typed data: one frozen dataclass per method, memgeo's defaults as its
fields and the released code's differences in ``OFFICIAL`` (``"official"``).

As for the signals (:mod:`memgeo.detect.settings`): an argument the caller gives explicitly wins, anything left as
``None`` comes from the preset; why memgeo differs, parameter by parameter: docs/conventions.md, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .._util import PRESET_NAMES, Settings, option, preset_rows, resolve_preset

__all__ = ["PRESETS", "PRESET_NAMES", "SETTINGS", "AdaptEmbeddingSettings", "SteerSettings", "BasinSettings",
           "OptimizeNoiseSettings", "resolve"]


def _float_or_auto(text: str) -> float | str:
    """A command-line value that is a number or ``auto``."""
    return "auto" if str(text).strip().lower() == "auto" else float(text)


def _boolean(text: str) -> bool:
    """A command-line truth value: true/false, yes/no, 1/0."""
    value = str(text).strip().lower()
    if value not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"expected true/false, yes/no or 1/0, got {text!r}")
    return value in ("true", "yes", "1")


@dataclass(frozen=True)
class AdaptEmbeddingSettings(Settings):
    """Wen et al. 2024 inference-time mitigation (prompt-embedding adaptation)."""

    optimizer: str = option("adam", "the optimizer of the embedding", choices=("adam", "adamw"))
    lr: float = option(0.05, "its learning rate", type=float)
    max_iters: int = option(30, "at most this many steps", type=int)
    target: float | None = option(None, "stop once the objective reaches this value (absolute)", type=float)
    relative_target: float | None = option(0.5, "stop once the objective reaches this fraction of its initial value",
                                           type=float)
    loss: str = option("mean", "the mean of the per-sample objective, or one Frobenius norm of the gap over all seeds",
                       choices=("mean", "frobenius"))
    freeze_start_token: bool = option(False, "keep the start-of-text token's embedding as it is (true/false)",
                                      type=_boolean)
    OFFICIAL: ClassVar[dict] = {"optimizer": "adamw", "max_iters": 10, "target": 3.0, "relative_target": None,
                                "loss": "frobenius", "freeze_start_token": True}


@dataclass(frozen=True)
class SteerSettings(Settings):
    """Brokman et al., NeurReps 2025 mid-generation steering: a flagged sample gets ``low_guidance`` from step
    ``act_from`` to before ``act_until`` (fractions of the steps). memgeo: repel (guidance -4) over the last tenth of
    the steps, once the image's content is fixed, so the caption's content stays and the copied details go (chosen on
    the embedded testbed by benchmarks/bench_steer_action.py: docs/conventions.md, section 4); official: guidance off
    from the flag."""

    threshold: float = option(3.0, "flag a sample once its combined criterion, averaged so far, exceeds this", type=float)
    low_guidance: float = option(-4.0, "the guidance of a flagged sample", type=float)
    act_from: float = option(0.9, "the fraction of the steps from which a flagged sample is steered", type=float)
    act_until: float = option(1.0, "the fraction of the steps from which it gets the prompt's guidance back (1: never)",
                              type=float)
    n_directions: int = option(4, "the kappa-delta tracker's directions per step", type=int)
    OFFICIAL: ClassVar[dict] = {"low_guidance": 0.0, "act_from": 0.0}


@dataclass(frozen=True)
class BasinSettings(Settings):
    """Jain et al., CVPR 2025 (SonyResearch/mitigating_memorization): guidance ``inside`` the attraction basin until the
    gap norm's first local minimum, full guidance after. official: generate_test_dataset_dtp.py (w = 1 before, no
    bound); memgeo: opposite guidance (w = -2, the README's static opposite-guidance command), forced by half way."""

    inside: float = option(-2.0, "the guidance scale inside the basin", type=float)
    force_at: float | None = option(0.5, "full guidance from this fraction of the steps if no exit was seen (None: never)",
                                    type=float)
    OFFICIAL: ClassVar[dict] = {"inside": 1.0, "force_at": None}


@dataclass(frozen=True)
class OptimizeNoiseSettings(Settings):
    """Jeon et al. 2025 SAIL initial-noise optimization, as released with the anisotropy code."""

    objective: str = option("sharpness", "the proxy minimized (sail: the released loop)",
                            choices=("sharpness", "guidance_norm", "sail"))
    lr: float = option(0.05, "Adam's learning rate", type=float)
    max_iters: int = option(20, "at most this many steps", type=int)
    threshold: float | None = option(None, "accept a sample once its proxy is at most this", type=float)
    penalty: float | str = option(1.0, "the weight of the penalty keeping |x_T|^2 (auto: the released rule)",
                                  type=_float_or_auto)
    max_rounds: int = option(30, "SAIL's rounds (the released loop only)", type=int)
    OFFICIAL: ClassVar[dict] = {"objective": "sail", "max_iters": 10, "threshold": 8.2, "penalty": "auto"}


#: Each mitigation's settings class, by the method's name.
SETTINGS = {"adapt_embedding": AdaptEmbeddingSettings, "steer": SteerSettings, "basin": BasinSettings,
            "optimize_noise": OptimizeNoiseSettings}

#: ``{method: {"memgeo": options, "official": options}}``, read from :data:`SETTINGS`.
PRESETS: dict[str, dict[str, dict]] = preset_rows(SETTINGS)


def resolve(name: str, preset: str, **given) -> dict:
    """The options of the mitigation ``name`` under ``preset``, overridden by every ``given`` value that is not None."""
    return resolve_preset(PRESETS, name, preset, **given)
