"""Estimators built on the divergence (:mod:`memgeo.geometry.estimators`): the p-Laplacian of a potential from its
score field, the flux of a direction field, and FLIPD's local intrinsic dimension. Each only calls the field (and its
JVP/VJP) and returns an :class:`~memgeo.geometry.estimators.Estimate` with its standard error and cost."""

from __future__ import annotations

import math

import torch

from .._checks import check_p, check_positive
from .estimators import P_LAPLACIAN_METHODS, Estimate, _default_h, _directional, divergence, jacobian
from .exact import p_laplacian_from_derivatives
from .fields import Field, check_points, flatten_field, power_field

__all__ = ["p_laplacian", "direction_flux", "flipd"]


def p_laplacian(
    field: Field,
    x: torch.Tensor,
    p,
    *,
    method: str = "product",
    trace_method: str = "hutchinson",
    n_probes: int = 64,
    probe: str = "rademacher",
    derivative: str = "jvp",
    h: float | None = None,
    radius: float | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Estimate:
    r"""p-Laplacian :math:`\Delta_p u = \operatorname{div}(|F|^{p-2} F)` of the potential of a score field F.

    Brokman et al. (SSVM 2025) estimate it from the learned score alone. Methods:

    ``"exact"``
        the full Jacobian from d JVPs, then :func:`p_laplacian_from_derivatives`.
    ``"product"``
        :math:`|F|^{p-2}[\operatorname{div} F + (p-2)\hat F^\top J \hat F]`: the divergence by
        ``trace_method`` (any :func:`divergence` method) and the directional term by one exact JVP
        (one VJP with ``derivative="vjp"``, central differences with ``"fd"``).
    ``"hutchinson"``, ``"hutchinson_fd"``, ``"flux"``, ``"flux_antithetic"``
        that divergence estimator applied to :math:`G_p = |F|^{p-2} F`. ``"flux"`` with p = 1 is the
        published direction-only flux (Brokman et al., NeurReps 2025).

    ``p`` is a real number >= 1 or ``inf`` (normalized infinity-Laplacian :math:`\hat F^\top J \hat F`,
    ``"exact"`` and ``"product"`` only). At a zero of F with p < 2 the value is NaN.
    Other arguments as in :func:`divergence`.
    """
    p = check_p(p)
    x = check_points(x)
    if method not in P_LAPLACIAN_METHODS:
        raise ValueError(f"method must be one of {P_LAPLACIAN_METHODS}, got {method!r}")
    div_kwargs = dict(
        n_probes=n_probes, probe=probe, h=h, radius=radius, generator=generator, chunk_size=chunk_size
    )
    B, d = x.shape[0], math.prod(x.shape[1:])
    if method == "exact":
        f = flatten_field(field, tuple(x.shape[1:]))
        F = f(x.reshape(B, d))
        J = jacobian(field, x, derivative="jvp", chunk_size=chunk_size)
        v = p_laplacian_from_derivatives(F, J, p)
        return Estimate(v, torch.zeros_like(v), n_evals=1, n_jvps=d, method=method)
    if method != "product":
        if math.isinf(p):
            raise ValueError("p = inf has no divergence form; use method='exact' or 'product'")
        est = divergence(power_field(field, p), x, method=method, derivative=derivative, **div_kwargs)
        return Estimate(est.value, est.stderr, est.n_evals, est.n_jvps, est.n_vjps, method, est.samples)

    # product form: |F|^{p-2} [div F + (p-2) F_hat^T J F_hat]
    if math.isinf(p) or p != 2:
        f = flatten_field(field, tuple(x.shape[1:]))
        y = x.reshape(B, d)
        F = f(y)
        norm = F.norm(dim=-1)
        F_hat = F / norm[:, None]
        quad = _directional(f, y, F_hat[None], derivative, h if h is not None else _default_h(x.dtype))[0]
        extra = {"jvp": (1, 1, 0), "vjp": (1, 0, 1), "fd": (3, 0, 0)}[derivative]  # (evals, jvps, vjps)
    if math.isinf(p):
        return Estimate(quad, torch.zeros_like(quad), extra[0], extra[1], extra[2], method)
    div_derivative = derivative if derivative in ("jvp", "vjp") else "jvp"
    div = divergence(field, x, method=trace_method, derivative=div_derivative, **div_kwargs)
    if p == 2:
        return Estimate(div.value, div.stderr, div.n_evals, div.n_jvps, div.n_vjps, method, div.samples)
    scale = norm ** (p - 2)
    value = scale * (div.value + (p - 2) * quad)
    stderr = scale * div.stderr
    if p > 2:
        value = torch.where(norm == 0, torch.zeros_like(value), value)
        stderr = torch.where(norm == 0, torch.zeros_like(stderr), stderr)
    samples = None if div.samples is None else scale * (div.samples + (p - 2) * quad)
    return Estimate(
        value,
        stderr,
        div.n_evals + extra[0],
        div.n_jvps + extra[1],
        div.n_vjps + extra[2],
        method,
        samples,
    )


def direction_flux(
    field: Field,
    x: torch.Tensor,
    *,
    radius: float,
    n_directions: int = 64,
    antithetic: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Estimate:
    r"""Direction-only flux of F (Brokman et al., NeurReps 2025).

    :math:`\frac{d}{r}\,\frac1n \sum_j \langle \hat F(x + r n_j), n_j \rangle`, the boundary-flux
    estimate of :math:`\operatorname{div}(F/|F|)` on a sphere of radius r: a curvature quantity
    that ignores the field's magnitude (for F = s it estimates :math:`\Delta_1 \log p`).
    """
    method = "flux_antithetic" if antithetic else "flux"
    return p_laplacian(
        field, x, 1, method=method, n_probes=n_directions, radius=radius, generator=generator, chunk_size=chunk_size
    )


def flipd(
    score_field: Field,
    x: torch.Tensor,
    sigma,
    *,
    method: str = "hutchinson",
    **kwargs,
) -> Estimate:
    r"""FLIPD local intrinsic dimension (Kamkari et al. 2024) from a score field at noise ``sigma``.

    :math:`\mathrm{LID} = d + \sigma^2(\operatorname{div} s + |s|^2)`, the trace by any
    :func:`divergence` method (keyword arguments are passed on). For a VP model pass the score of
    :math:`p_t` and :math:`\sigma = \sigma_t`.
    """
    x = check_points(x)
    sigma = check_positive("sigma", sigma)
    B, d = x.shape[0], math.prod(x.shape[1:])
    s = flatten_field(score_field, tuple(x.shape[1:]))(x.reshape(B, d))
    div = divergence(score_field, x, method=method, **kwargs)
    s2 = (s * s).sum(-1)
    value = d + sigma**2 * (div.value + s2)
    samples = None if div.samples is None else d + sigma**2 * (div.samples + s2)
    return Estimate(value, sigma**2 * div.stderr, div.n_evals + 1, div.n_jvps, div.n_vjps, method, samples)
