"""The registry of mitigation methods: what :func:`~memgeo.mitigate.generate.generate`, ``memgeo generate
--mitigate``, its ``--METHOD-OPTION`` flags, the docs' table of options and the trade-off benchmark read.

A method is one :class:`MethodSpec`: its name, the function that generates with it (``run(model, cond, x_T,
request) -> Generation``), the paper, its settings class (:mod:`memgeo.mitigate.presets`) and the strengths the
trade-off sweeps by default. A new method is its module (the run function), its settings class and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .._util import Settings
from ..sampling import ddim_sample, trajectory_trackers
from .basin import BasinPolicy
from .calibrate import reference_level
from .embedding import adapt_embedding
from .noise import optimize_noise
from .presets import SETTINGS
from .steering import SteeringPolicy, SteeringReference

__all__ = ["Generation", "Request", "MethodSpec", "METHODS"]


@dataclass
class Generation:
    """Output of :func:`~memgeo.mitigate.generate.generate`: final denoised samples, model evaluations per sample,
    details."""

    samples: torch.Tensor
    n_evals: int
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What one mitigated generation is asked: the method's ``strength`` (its meaning is the method's), the sampler's
    settings, the preset or the method's own ``settings`` (an instance of its settings class; fields given there win
    over the preset), the steering reference, unlabelled reference prompts to calibrate a stopping level on, and the
    seed of the method's random directions."""

    strength: float | None = None
    n_steps: int = 50
    guidance_scale: float = 7.5
    preset: str = "memgeo"
    settings: Settings | None = None
    reference: SteeringReference | None = None
    reference_prompts: Any = None
    seed: int = 0
    progress: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """A mitigation method and what it needs.

    Attributes:
        name: its name (``generate(method=...)``, ``memgeo generate --mitigate``).
        run: ``run(model, cond, x_T, request: Request) -> Generation``.
        source: the paper it implements ("baseline" for a plain control).
        strength: what ``strength`` means for it (the command line's help).
        settings: the key of its settings class in :data:`~memgeo.mitigate.presets.SETTINGS` (None: no options).
        settings_class: a new method's settings class, registered under ``settings`` with its line.
        tradeoff: its rows in the trade-off benchmark's default sweep: ``(label, preset, strengths)``.
        needs_reference: it needs a steering reference (``calibrate_steering`` on ordinary prompts).
    """

    name: str
    run: Callable
    source: str
    strength: str = "unused"
    settings: str | None = None
    settings_class: type | None = None
    tradeoff: tuple = ()
    needs_reference: bool = False

    def __post_init__(self):
        if self.settings_class is not None:
            if self.settings is None:
                raise ValueError(f"method {self.name!r}: settings_class needs the settings key it registers under")
            SETTINGS[self.settings] = self.settings_class

    @property
    def settings_type(self) -> type | None:
        """Its settings class (None: it takes no options)."""
        return SETTINGS.get(self.settings) if self.settings else None

    def check_settings(self, settings) -> None:
        """Refuse settings of another method's class, naming both."""
        if settings is not None and (self.settings_type is None or not isinstance(settings, self.settings_type)):
            want = self.settings_type.__name__ if self.settings_type else "none"
            raise ValueError(f"settings of method {self.name!r} must be a {want}, got {type(settings).__name__}")


def _plain(model, cond, x_T, req: Request) -> Generation:
    res = ddim_sample(model, cond, x_T, n_steps=req.n_steps, guidance_scale=req.guidance_scale, progress=req.progress)
    return Generation(res.denoised, res.n_evals, {"guidance_scale": req.guidance_scale})


def _guidance(model, cond, x_T, req: Request) -> Generation:
    w = float(req.strength if req.strength is not None else 1.0)
    res = ddim_sample(model, cond, x_T, n_steps=req.n_steps, guidance_scale=w, progress=req.progress)
    return Generation(res.denoised, res.n_evals, {"guidance_scale": w})


def _embedding(model, cond, x_T, req: Request) -> Generation:
    target = (reference_level(model, req.reference_prompts, x_T, "guidance_norm", n_steps=req.n_steps)
              if req.reference_prompts is not None else None)
    ad = adapt_embedding(model, cond, x_T, req.settings, preset=req.preset, n_steps=req.n_steps, target=target,
                         relative_target=None if req.strength is None or target is not None else float(req.strength))
    res = ddim_sample(model, ad.embedding, x_T, n_steps=req.n_steps, guidance_scale=req.guidance_scale,
                      progress=req.progress)
    return Generation(res.denoised, ad.n_evals + res.n_evals, {"losses": ad.losses, "converged": ad.converged})


def _noise(model, cond, x_T, req: Request) -> Generation:
    # strength: the iterations; unset, 10 under the memgeo preset, else the settings' (or the official preset's)
    iters = int(req.strength) if req.strength is not None else (
        10 if req.preset == "memgeo" and req.settings is None else None)
    threshold = (reference_level(model, req.reference_prompts, x_T, "sharpness", n_steps=req.n_steps)
                 if req.reference_prompts is not None else None)
    opt = optimize_noise(model, cond, x_T, req.settings, preset=req.preset, max_iters=iters, n_steps=req.n_steps,
                         threshold=threshold)
    res = ddim_sample(model, cond, opt.x_T, n_steps=req.n_steps, guidance_scale=req.guidance_scale,
                      progress=req.progress)
    return Generation(res.denoised, opt.n_evals + res.n_evals, {"proxy": opt.proxy.tolist()})


def _basin(model, cond, x_T, req: Request) -> Generation:
    policy = BasinPolicy(req.n_steps, preset=req.preset, settings=req.settings,
                         inside=None if req.strength is None else float(req.strength))
    res = ddim_sample(model, cond, x_T, n_steps=req.n_steps, guidance_scale=req.guidance_scale, policy=policy,
                      progress=req.progress)
    return Generation(res.denoised, res.n_evals, {"exit_step": policy.exit_step.tolist(), "inside": policy.inside})


def _steer(model, cond, x_T, req: Request) -> Generation:
    if req.reference is None:
        raise ValueError("method='steer' needs reference= (from calibrate_steering on ordinary conditions)")
    policy = SteeringPolicy.from_preset(req.reference, req.preset, req.n_steps, settings=req.settings,
                                        threshold=None if req.strength is None else float(req.strength))
    res = ddim_sample(model, cond, x_T, n_steps=req.n_steps, guidance_scale=req.guidance_scale, policy=policy,
                      progress=req.progress, trackers=trajectory_trackers(policy.n_directions,
                                                                         generator=torch.Generator().manual_seed(req.seed)))
    return Generation(res.denoised, res.n_evals, {"flagged": policy.flagged.tolist(),
                                                  "flag_step": policy.flag_step.tolist(),
                                                  "kappa_delta": res.trace["kappa_delta"],
                                                  "guidance_norm": res.trace["guidance_norm"]})


#: Every mitigation method, by name (the first is the unmitigated generation).
METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("none", _plain, "baseline", tradeoff=(("none", "memgeo", (None,)),)),
    MethodSpec("guidance", _guidance, "baseline", "the guidance scale (default 1)",
               tradeoff=(("guidance", "memgeo", (5.0, 3.0, 1.0)),)),
    MethodSpec("embedding", _embedding, "Wen et al., ICLR 2024", "the relative target of the guidance norm (default 0.5)",
               "adapt_embedding", tradeoff=(("embedding", "memgeo", (0.7, 0.5, 0.3)),
                                            ("embedding (official)", "official", (None,)))),
    MethodSpec("noise", _noise, "Jeon et al., ICML 2025 (SAIL)", "the iterations (default 10)", "optimize_noise",
               tradeoff=(("noise", "memgeo", (5, 10, 20)), ("noise (official SAIL)", "official", (None,)))),
    MethodSpec("steer", _steer, "Brokman et al., NeurReps 2025", "the flag threshold (default 3; lower steers more)",
               "steer", tradeoff=(("steer", "memgeo", (4.0, 3.0, 2.0, 1.0)),
                                  ("steer (official)", "official", (4.0, 3.0, 2.0))), needs_reference=True),
    MethodSpec("basin", _basin, "Jain et al., CVPR 2025", "the guidance inside the basin (memgeo -2, official 1)",
               "basin", tradeoff=(("basin", "memgeo", (-2.0, -4.0, 0.0)), ("basin (official)", "official", (None,)))),
)}
