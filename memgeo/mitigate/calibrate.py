"""Thresholds that transfer: a mitigation's stopping level calibrated on unlabelled reference prompts of the model at
hand, instead of an absolute number set on Stable Diffusion v1 (which stops at once on another model's scale)."""

from __future__ import annotations

import torch

from ..guidance import OBJECTIVES, gap_objective, objective_times

__all__ = ["reference_level"]


def reference_level(model, prompts, x_T: torch.Tensor, objective: str = "guidance_norm", *, quantile: float = 0.5,
                    n_steps: int = 50, weights="auto") -> float:
    """The level of a mitigation objective (:data:`~memgeo.guidance.OBJECTIVES`: the guidance norm, anisotropy,
    sharpness) that ordinary prompts sit at: its ``quantile`` (default the median) over unlabelled ``prompts`` of
    each prompt's mean over the noises ``x_T``. A mitigation that brings a prompt down to it makes the prompt look
    ordinary to that objective; as a target it carries over to any model, since it is read off the model itself
    (as a scan's ``--reference`` calibrates a detector's threshold). No label is read."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one unlabelled reference prompt (it is empty)")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {objective!r}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    times = objective_times(model, n_steps)
    with torch.no_grad():
        values = torch.stack([gap_objective(model, x_T, p, objective, times, weights).mean() for p in prompts])
    return float(torch.quantile(values.double(), quantile))
