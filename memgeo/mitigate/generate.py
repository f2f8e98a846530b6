"""Generation with any mitigation method at a strength."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..sampling import ddim_sample, trajectory_trackers
from .basin import BasinPolicy
from .calibrate import reference_level
from .embedding import adapt_embedding
from .noise import optimize_noise
from .steering import SteeringPolicy, SteeringReference

__all__ = ["METHODS", "Generation", "generate"]


METHODS = ("none", "guidance", "embedding", "noise", "steer", "basin")


@dataclass
class Generation:
    """Output of :func:`generate`: final denoised samples, model evaluations per sample, details."""

    samples: torch.Tensor
    n_evals: int
    info: dict = field(default_factory=dict)


def generate(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    method: str = "none",
    strength: float | None = None,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    reference: SteeringReference | None = None,
    n_directions: int = 4,
    seed: int = 0,
    preset: str = "memgeo",
    progress: bool = False,
    reference_prompts=None,
) -> Generation:
    """Generate with a mitigation method at a strength.

    ``method`` and the meaning of ``strength``:

    * ``"none"``: plain CFG DDIM (strength unused);
    * ``"guidance"``: the baseline of simply lowering the guidance scale to ``strength``;
    * ``"embedding"``: :func:`adapt_embedding` of the guidance norm down to ``strength`` times its
      initial value (default 0.5), then generation with the adapted embedding;
    * ``"noise"``: :func:`optimize_noise` (sharpness proxy) for ``strength`` iterations (default 10);
    * ``"steer"``: :class:`SteeringPolicy` with threshold ``strength`` (default 3; lower steers more);
      flagged samples get the preset's ``low_guidance`` from its ``act_from`` (memgeo: -4 from half
      way; official: 0 from the flag); needs ``reference`` (:func:`calibrate_steering`);
    * ``"basin"``: :class:`BasinPolicy`, guidance ``strength`` inside the attraction basin (default: the preset's,
      memgeo -2, official 1) until the guidance gap's first local minimum, full guidance after; no extra evaluation.

    ``reference_prompts`` (unlabelled ordinary prompts of the model at hand): for ``"embedding"`` and ``"noise"``,
    the stopping level is calibrated on them (:func:`~memgeo.mitigate.calibrate.reference_level`, their median
    guidance norm or sharpness on ``x_T``) instead of the preset's (a relative target, or an absolute threshold set
    on SD v1); ``strength`` is then unused for ``"embedding"``.

    ``preset`` selects the settings of ``"embedding"``, ``"noise"``, ``"steer"`` and ``"basin"`` (``"memgeo"`` or
    ``"official"``, see :func:`adapt_embedding`, :func:`optimize_noise` and the ``steer`` table in
    :mod:`memgeo.detect.presets`); a ``strength`` given overrides the relative target, the iteration
    count or the threshold.
    """

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("none", "guidance"):
        w = guidance_scale if method == "none" else float(strength if strength is not None else 1.0)
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=w, progress=progress)
        return Generation(res.denoised, res.n_evals, {"guidance_scale": w})
    if method == "embedding":
        target = (reference_level(model, reference_prompts, x_T, "guidance_norm", n_steps=n_steps)
                  if reference_prompts is not None else None)
        ad = adapt_embedding(model, cond, x_T, preset=preset, n_steps=n_steps, target=target,
                             relative_target=None if strength is None or target is not None else float(strength))
        res = ddim_sample(model, ad.embedding, x_T, n_steps=n_steps, guidance_scale=guidance_scale, progress=progress)
        return Generation(res.denoised, ad.n_evals + res.n_evals, {"losses": ad.losses, "converged": ad.converged})
    if method == "noise":
        iters = int(strength) if strength is not None else (10 if preset == "memgeo" else None)
        threshold = (reference_level(model, reference_prompts, x_T, "sharpness", n_steps=n_steps)
                     if reference_prompts is not None else None)
        opt = optimize_noise(model, cond, x_T, preset=preset, max_iters=iters, n_steps=n_steps, threshold=threshold)
        res = ddim_sample(model, cond, opt.x_T, n_steps=n_steps, guidance_scale=guidance_scale, progress=progress)
        return Generation(res.denoised, opt.n_evals + res.n_evals, {"proxy": opt.proxy.tolist()})
    if method == "basin":
        policy = BasinPolicy(n_steps, preset=preset, inside=None if strength is None else float(strength))
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=policy,
                          progress=progress)
        return Generation(res.denoised, res.n_evals, {"exit_step": policy.exit_step.tolist(), "inside": policy.inside})
    if reference is None:
        raise ValueError("method='steer' needs reference= (from calibrate_steering on ordinary conditions)")
    policy = SteeringPolicy.from_preset(reference, preset, n_steps, threshold=None if strength is None else float(strength))
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=policy, progress=progress,
                      trackers=trajectory_trackers(n_directions, generator=torch.Generator().manual_seed(seed)))
    return Generation(res.denoised, res.n_evals, {"flagged": policy.flagged.tolist(), "flag_step": policy.flag_step.tolist(),
                                                   "kappa_delta": res.trace["kappa_delta"], "guidance_norm": res.trace["guidance_norm"]})
