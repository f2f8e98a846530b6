"""p-Laplace analysis (Brokman et al., SSVM 2025): the p-Laplacian of log p_t around a generated sample."""

from __future__ import annotations

import math

import torch

from .._checks import check_int, check_p, check_positive
from ..geometry import p_laplacian
from ..parameterization import eps_to_score
from .common import SignalResult, generate_sample, mean_cosine_on_sphere, renoise, stacked_eps
from .settings import PLaplaceSettings

__all__ = ["p_laplace_flux", "p_laplace_released"]


def p_laplace_flux(
    model,
    cond,
    x_T: torch.Tensor,
    settings: PLaplaceSettings | None = None,
    *,
    preset: str = "memgeo",
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> SignalResult:
    r"""Post-generation p-Laplace flux (Brokman et al., SSVM 2025).

    Generates :math:`\hat x_0` from ``x_T`` (DDIM, CFG; the last denoised estimate; or takes ``x0``)
    and probes the ``branch`` field (``"conditional"``, or ``"unconditional"`` when the prompt is
    unavailable) on a sphere of radius ``radius_scale * sigma_t * sqrt(d)`` with ``n_directions``
    directions at ``t_probe``. Memorized samples sit in sharp basins. The options are the fields of
    :class:`~memgeo.detect.settings.PLaplaceSettings`: ``settings`` (else the preset ``preset``), each
    option given as a keyword replacing its field.

    memgeo preset: the score field, the sphere around :math:`\hat x_0` re-noised at ``t_probe``
    (default: the third-to-last DDIM timestep, 41 for 50 steps), 16 directions, and the boundary
    flux estimate of :math:`\Delta_p \log p_t` (``method="flux_antithetic"`` uses antithetic
    pairs); it is strongly negative in a basin, so ``score = -value``.

    ``probe``: where the generated sample is probed (:func:`~memgeo.detect.common.probe_point`; memgeo ``"data"``:
    clamped to the model's data range where it declares one; official ``"generated"``).

    official preset: :func:`p_laplace_released` (memgeo's flux of the score is :math:`-\frac{d}{r}`
    times its mean cosine for p = 1).
    """
    s = PLaplaceSettings.resolve(settings, preset, **options)
    setting = (s.field, s.center, s.value)
    if setting == ("eps", "scaled", "mean_cosine"):
        return p_laplace_released(model, cond, x_T, s, n_steps=n_steps, guidance_scale=guidance_scale, x0=x0,
                                  generator=generator)
    if setting != ("score", "renoised", "flux"):
        raise ValueError("field/center/value must be ('score', 'renoised', 'flux') or ('eps', 'scaled', 'mean_cosine'), "
                         f"got {setting}")
    p, t, r, c, x0, cost = _probe_setup(model, cond, x_T, s, n_steps=n_steps, guidance_scale=guidance_scale, x0=x0)
    sigma = float(model.sigma(t))
    with torch.no_grad():
        x_t = renoise(model, x0, t, generator)
        eps = stacked_eps(model, t, c, x_t.shape[0])
        est = p_laplacian(lambda z: eps_to_score(eps(z), sigma), x_t, p, method=s.method,
                          n_probes=check_int("n_directions", s.n_directions, minimum=2), radius=r, generator=generator)
    return SignalResult("p_laplace", -est.value, est.value, cost + est.n_evals,
                        extras={"stderr": est.stderr, "t": t, "x0": x0})


def p_laplace_released(model, cond, x_T: torch.Tensor, settings: PLaplaceSettings | None = None, *,
                       n_steps: int = 50, guidance_scale: float = 7.5, x0: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, **options) -> SignalResult:
    r"""The p-Laplace value as the released code computes it (``preset="official"`` of :func:`p_laplace_flux`).

    The eps prediction of the ``branch`` as the field at ``t_probe`` (10), on the sphere of radius
    ``radius_scale * sigma_t * sqrt(d)`` around :math:`\sqrt{\bar\alpha_t}\hat x_0` with no added noise,
    128 directions, and the mean cosine :math:`\frac1n\sum_j\cos(\hat\epsilon(c + r n_j), n_j)`; for
    p != 1 the cosine times :math:`|\hat\epsilon|^{p-2}` (not a p-Laplacian; reproduced). It is positive
    in a basin, so ``score = value``. ``settings`` defaults to the official preset; its ``p``, ``t_probe``,
    ``n_directions``, ``radius_scale``, ``branch`` and ``probe`` are read (and each keyword option given).
    """
    s = PLaplaceSettings.resolve(settings, "official", **options)
    p, t, r, c, x0, cost = _probe_setup(model, cond, x_T, s, n_steps=n_steps, guidance_scale=guidance_scale, x0=x0)
    n_dir = check_int("n_directions", s.n_directions, minimum=2)
    with torch.no_grad():
        centre = float(model.alpha(t)) * x0  # sqrt(abar_t) x0_hat, no added noise
        v, se = mean_cosine_on_sphere(stacked_eps(model, t, c, centre.shape[0]), centre, r, n_dir, p, generator)
    return SignalResult("p_laplace", v, v, cost + n_dir, extras={"stderr": se, "t": t, "x0": x0})


def _probe_setup(model, cond, x_T, s: PLaplaceSettings, *, n_steps, guidance_scale, x0):
    """Checked ``(p, t, radius, condition of the branch, x0, generation cost)`` of one p-Laplace probe."""
    p = check_p(s.p)
    check_positive("radius_scale", s.radius_scale)
    if s.branch not in ("conditional", "unconditional"):
        raise ValueError(f"branch must be 'conditional' or 'unconditional', got {s.branch!r}")
    cost = 0
    if x0 is None:
        x0, cost = generate_sample(model, cond, x_T, n_steps, guidance_scale, s.probe)
    t = int(model.timesteps(n_steps)[-3]) if s.t_probe is None else int(s.t_probe)
    r = s.radius_scale * float(model.sigma(t)) * math.sqrt(math.prod(x_T.shape[1:]))
    return p, t, r, cond if s.branch == "conditional" else None, x0, cost
