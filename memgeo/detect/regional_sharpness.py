"""Regional sharpness (memgeo): the sharpness field's largest share over regions of the latent, at four plain evaluations."""

from __future__ import annotations

import torch

from ..guidance import gap_sharpness_field, sample_norm
from .common import SignalResult, check_region_fractions, first_timestep, region_max
from .presets import resolve

__all__ = ["regional_sharpness"]


def regional_sharpness(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", t=None, n_steps: int = 50,
                       window: float | None = None, stride: float | None = None, step: float | None = None) -> SignalResult:
    r"""Regional sharpness: :func:`~memgeo.detect.common.region_max` of the sharpness field
    :math:`J_{\Delta\epsilon}\Delta\epsilon/\sigma_t^2` at ``x_T`` and the first timestep.

    Sharpness (Jeon et al.) is the field's whole norm: it sees a prompt whose whole image is pinned (matching and
    template memorization) but averages a memorized region with the rest of the image. Here each region of
    ``window`` of the latent's side (starts every ``stride``) is scaled to the whole latent and the largest is the
    score: equal to sharpness for a field spread evenly, larger where the curvature concentrates in a region
    (local memorization). The field comes from a forward difference along the gap (``step`` times
    :math:`\sigma_t`; :func:`~memgeo.guidance.gap_sharpness_field`): four plain UNet evaluations, no JVP;
    ``step=0`` takes the JVP instead. ``extras["whole"]`` is the whole norm (sharpness from the same field).
    """
    opts = resolve("regional_sharpness", preset, window=window, stride=stride, step=step)
    check_region_fractions(opts["window"], opts["stride"])  # before any evaluation
    t = first_timestep(model, t, n_steps)
    h = opts["step"] or None
    with torch.no_grad() if h is not None else torch.enable_grad():
        f = gap_sharpness_field(model, x_T, t, cond, step=h).detach()
    v = region_max(f, opts["window"], opts["stride"])
    return SignalResult("regional_sharpness", v, v, 4 if h is not None else 2, 0 if h is not None else 1,
                        extras={"t": t, "whole": sample_norm(f)})
