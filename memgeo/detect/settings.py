"""Typed settings of every signal: one frozen dataclass per signal whose fields are its options.

A field's default is memgeo's setting; ``OFFICIAL`` holds where the released code differs, so ``Settings.official()``
is the paper's preset. The preset tables (:data:`memgeo.detect.PRESETS`), ``memgeo scan``'s flags and their help, and
the docs' table of options (:func:`settings_table`) are all read from these fields: a new option is one field.
Why memgeo differs from the released code, option by option: docs/conventions.md, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .._util import Settings, flag_name, option, settings_table

__all__ = ["Settings", "option", "GuidanceNormSettings", "AnisotropySettings", "SharpnessSettings", "PLaplaceSettings",
           "KappaDeltaSettings", "FlipdSettings", "BrightEndingSettings", "RegionalSharpnessSettings",
           "UpdateNormSettings", "settings_table", "flag_name"]


@dataclass(frozen=True)
class GuidanceNormSettings(Settings):
    """Wen et al., ICLR 2024 (YuxinWenRick/diffusion_memorization)."""

    steps: str = option("first", "where the gap norm is read: first (x_T at the first timestep, 2 evaluations) or all "
                                 "(the mean over the CFG generation)", choices=("first", "all"))
    space: str = option("eps", "the gap of eps predictions, or of the model's raw outputs (prediction)",
                        choices=("eps", "prediction"))
    OFFICIAL: ClassVar[dict] = {"steps": "all", "space": "prediction"}


@dataclass(frozen=True)
class AnisotropySettings(Settings):
    """Asthana & Belagiannis, ICLR 2026 (rohanasthana/memorization-anisotropy)."""

    weights: str = option("auto", "the (g_norm, g_cos) weights: auto (sd1 for epsilon models, sd2 for v-prediction), "
                                  "sd1 or sd2", choices=("auto", "sd1", "sd2"))
    norm: str = option("reference_size", "the norm term: at the latent size the weights were tuned at "
                                         "(reference_size) or as released", choices=("reference_size", "released"))
    space: str = option("eps", "the gap of eps predictions, or of the raw outputs (prediction)",
                        choices=("eps", "prediction"))
    OFFICIAL: ClassVar[dict] = {"norm": "released", "space": "prediction"}


@dataclass(frozen=True)
class SharpnessSettings(Settings):
    """Jeon et al., ICML 2025: memgeo matches the released code (no options)."""


def _check_timestep(flag: str):
    """A field check for an integer timestep of the model, within ``[1, T - 1]`` ("auto" passes)."""
    def check(model, value) -> None:
        T = model.schedule.num_train_timesteps
        if isinstance(value, str) and value == "auto":
            return
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= T - 1:
            raise ValueError(f"{flag} must be an integer timestep of this model, in [1, {T - 1}], got {value!r}")
    return check


@dataclass(frozen=True)
class PLaplaceSettings(Settings):
    """Brokman et al., SSVM 2025 (Identifying-Memorization-of-Diffusion-Models-through-p-Laplace-Analysis)."""

    field: str = option("score", "the field probed: the score (the gradient of log p_t) or the eps prediction",
                        choices=("score", "eps"))
    p: float = option(1.0, "the p of the p-Laplacian (p >= 1)", type=float)
    n_directions: int = option(16, "directions on the sphere", type=int)
    t_probe: int | None = option(None, "the probe timestep (default: the third-to-last DDIM timestep)", type=int,
                                 check=_check_timestep("--p-laplace-t-probe"))
    center: str = option("renoised", "the sphere's centre: the sample re-noised at t, or scaled by alpha_t",
                         choices=("renoised", "scaled"))
    value: str = option("flux", "the estimate: the boundary flux of Delta_p log p_t, or the released mean cosine",
                        choices=("flux", "mean_cosine"))
    probe: str = option("data", "where the generated sample is probed: data (projected to the model's data range "
                                "where it declares one), projected, or generated", choices=("data", "projected",
                                                                                            "generated"))
    radius_scale: float = option(1.0, "the sphere's radius in units of sigma_t sqrt(d)", type=float, flag=False)
    branch: str = option("conditional", "the field probed: the conditional branch, or the unconditional one where the "
                                        "prompt is unavailable", choices=("conditional", "unconditional"), flag=False)
    method: str = option("flux", "the flux estimator: plain directions, or antithetic pairs (flux_antithetic)",
                         choices=("flux", "flux_antithetic"), flag=False)
    OFFICIAL: ClassVar[dict] = {"field": "eps", "n_directions": 128, "t_probe": 10, "center": "scaled",
                                "value": "mean_cosine", "probe": "generated"}


@dataclass(frozen=True)
class KappaDeltaSettings(Settings):
    """Brokman et al., NeurReps 2025 (Tracking-Memorization-Geometry-throughout-the-Diffusion-Model-Generative-Process).
    The released run: 500 PNDM steps (SD v1.4's scheduler), latents saved by the pipeline callback at steps 1 and
    every 50th (the callback skips PNDM's warm-up step 0), each probed at t = its step index."""

    n_directions: int = option(4, "directions per step", type=int)
    geometry: str = option("memgeo", "the probes: memgeo (each step's own timestep) or official (the released "
                                     "probes)", choices=("memgeo", "official"))
    step: int | None = option(None, "read one step (a sampler step; under official geometry a released step index) "
                                    "instead of the mean over the tracked steps", type=int)
    released_steps: int = option(500, "the released run's steps (official geometry)", flag=False)
    probe_steps: tuple = option((1, *range(50, 501, 50)), "the released steps probed (official geometry)", flag=False)
    track_steps: int | None = option(None, "the mean over the first k sampler steps only, the sampler stopped there "
                                           "(None: every step; the budget variants fix it)", type=int, flag=False)
    OFFICIAL: ClassVar[dict] = {"n_directions": 16, "geometry": "official", "step": 500}


@dataclass(frozen=True)
class FlipdSettings(Settings):
    """Kamkari et al. 2024 (layer6ai-labs FLIPD). memgeo probes on the data (the sample projected to the model's data
    range where it declares one; benchmarks/results/probe_points/), the official preset the sample as generated."""

    t: int | str = option("auto", "the probe timestep; auto chooses it once from the scanned or --reference "
                                  "prompts' LID curve", type=int, check=_check_timestep("--flipd-t"))
    method: str = option("hutchinson_fd", "the trace: central-difference Hutchinson (hutchinson_fd), exact up to d = 3500 "
                                          "and JVP-Hutchinson above (exact_up_to_3500), or any divergence method",
                         choices=("hutchinson_fd", "exact_up_to_3500", "hutchinson", "exact"))
    n_probes: int = option(8, "Hutchinson probes", type=int)
    probe: str = option("data", "where the generated sample is probed: data, projected, or generated",
                        choices=("data", "projected", "generated"))
    OFFICIAL: ClassVar[dict] = {"method": "exact_up_to_3500", "probe": "generated"}


@dataclass(frozen=True)
class BrightEndingSettings(Settings):
    """Chen et al., ICLR 2025 (chenchen-usyd/BE-PRSS): the released code keeps every step's value; memgeo's default is
    the same reading."""

    steps: str = option("all", "the mean over every step, or the first step's value", choices=("all", "first"))
    layers: str = option("down", "the cross-attention layers whose last-step map is the mask", choices=("down", "all"))


@dataclass(frozen=True)
class RegionalSharpnessSettings(Settings):
    """memgeo's own detector for every kind of memorization: the sharpness field's largest region; no released code,
    so both presets are the same."""

    window: float = option(0.5, "a region's side, as a fraction of the latent's", type=float)
    stride: float = option(0.25, "regions start every this fraction of the side", type=float)
    step: float = option(0.1, "the forward difference along the gap, in units of sigma_t", type=float)


@dataclass(frozen=True)
class UpdateNormSettings(Settings):
    """Huang et al., KDD 2026 ("Broken Memories"): no released code; the first 3 steps, as their table's column."""

    k: int = option(3, "the first k sampler updates whose norms are averaged", type=int)
