"""Anisotropy of the log-probability (Asthana & Belagiannis, ICLR 2026): gap norm at high noise plus alignment at low noise."""

from __future__ import annotations

import torch

from ..guidance import anisotropy_terms
from ..guidance import timestep_value
from .common import SignalResult, first_timestep
from .presets import resolve

__all__ = ["anisotropy"]


def anisotropy(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    preset: str = "memgeo",
    weights=None,
    norm: str | None = None,
    space: str | None = None,
    n_steps: int = 50,
    t_hi: int | None = None,
    t_lo: int | None = None,
) -> SignalResult:
    r"""Anisotropy signal (Asthana & Belagiannis, ICLR 2026), on pure noise with four evaluations.

    :math:`g_{norm}\, N + g_{cos}\,\mathrm{mean}_{pos} \cos_{channel}(\epsilon_u, \Delta\epsilon)(x_T, t_{lo})`
    on the same ``x_T``: the isotropic gap norm N at high noise plus the anisotropic alignment of
    the guidance gap with the unconditional prediction at low noise (a vanishing gap contributes
    cosine 0). ``t_hi``, ``t_lo`` default to the first and third-to-last timesteps of
    ``n_steps``-step DDIM (981 and 41 for 50 steps).

    ``weights``: ``"auto"`` (by prediction type: epsilon -> ``"sd1"`` (1, 2), v -> ``"sd2"`` (1, 0.1)),
    a family name, or ``(g_norm, g_cos)``. ``norm``:

    * ``"reference_size"`` (memgeo preset): :math:`N = |\Delta\epsilon|\sqrt{d_{ref}/d}`, the norm the
      gap would have at the latent size ``d_ref`` the weights were tuned at (SD v1 4x64x64, SD v2
      4x96x96). The norm grows like :math:`\sqrt d` at a fixed per-coordinate gap while the mean
      cosine does not, so this keeps the balance of the two terms on any latent size; on the
      models the weights come from it equals the official value. Explicit weights have no
      reference size: N is the raw norm.
    * ``"raw"``: :math:`N = |\Delta\epsilon|`.
    * ``"released"`` (official): the raw norm, except on v-prediction models, where the released
      code computes the gap from :math:`(\alpha v - x)/\sigma^2`, i.e. :math:`N = |\Delta\epsilon|/\sigma_{hi}^2`.

    ``space``: the cosine between eps predictions (``"eps"``, memgeo) or between the model's raw
    outputs (``"prediction"``, official: :math:`\cos(v_u, v_c - v_u)` on v-prediction models).
    """
    opts = resolve("anisotropy", preset, weights=weights, norm=norm, space=space)
    ts = model.timesteps(n_steps)
    if len(ts) < 3 and t_lo is None:
        raise ValueError("n_steps must be >= 3 to place t_lo at the third-to-last step")
    t_hi = first_timestep(model, t_hi, n_steps)
    t_lo = timestep_value(ts[-3]) if t_lo is None else timestep_value(t_lo)
    with torch.no_grad():
        v, norm_term, cos_term, (g_norm, g_cos) = anisotropy_terms(model, x_T, cond, t_hi, t_lo, opts)
    return SignalResult("anisotropy", v, v, 4, extras={"norm": norm_term, "cos": cos_term, "t_hi": t_hi, "t_lo": t_lo,
                                                      "weights": (g_norm, g_cos)})
