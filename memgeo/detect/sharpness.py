"""Sharpness (Jeon et al., ICML 2025): the Hessian gap applied to the score gap."""

from __future__ import annotations

import torch

from ..guidance import gap_sharpness
from .common import SignalResult, first_timestep
from .presets import resolve

__all__ = ["sharpness"]


def sharpness(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", t: int | None = None,
              n_steps: int = 50) -> SignalResult:
    r"""Sharpness (Jeon et al., ICML 2025): :math:`\|(H_c - H_u)\, s_\delta\|` at ``x_T`` and the first timestep.

    With :math:`s_\delta = -\Delta\epsilon/\sigma_t` and :math:`H_c - H_u = -\nabla\Delta\epsilon/\sigma_t`,
    this is :math:`\|J_{\Delta\epsilon}\Delta\epsilon\| / \sigma_t^2`: two evaluations for the gap and
    one JVP through the batched conditional and unconditional branches. Both presets are the same
    (memgeo matches the released code).
    """
    resolve("sharpness", preset)
    t = first_timestep(model, t, n_steps)
    v = gap_sharpness(model, x_T, t, cond).detach()
    return SignalResult("sharpness", v, v, 2, 1, extras={"t": t})
