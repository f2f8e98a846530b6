r"""Exact pointwise geometry of :math:`u = \log p` from its score :math:`s = \nabla u` and Hessian :math:`H`.

Conventions follow docs/conventions.md, section 2. Inputs carry arbitrary leading dimensions:
``score`` is ``[..., d]`` and ``hessian`` is ``[..., d, d]``. For a learned field ``hessian`` is
the Jacobian ``J`` of the score; formulas that need a symmetric matrix (curvatures, the
anisotropy index) use its symmetric part ``(J + J^T) / 2``.

Undefined values are NaN, never silently clamped: at a critical point (``s = 0``) the
p-Laplacian with ``p < 2``, the normalized infinity-Laplacian and the curvatures are NaN
(for ``p = 2`` the value is ``tr H``; for ``p > 2`` it is 0, since ``|s|^{p-2} s`` has zero
derivative there); the anisotropy index of a zero Hessian and the cosine of a zero vector are NaN.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_finite, check_p, check_positive, check_tensor

__all__ = [
    "p_laplacian_from_derivatives",
    "normalized_infinity_laplacian",
    "principal_curvatures_from_derivatives",
    "mean_curvature_from_derivatives",
    "anisotropy_index",
    "alignment_cosine",
    "alignment_cosine_per_position",
    "flipd_from_derivatives",
]


def _check_pair(score: torch.Tensor, hessian: torch.Tensor) -> int:
    check_tensor("score", score, min_dim=1)
    check_tensor("hessian", hessian, min_dim=2)
    d = score.shape[-1]
    if hessian.shape != score.shape + (d,):
        raise ValueError(
            f"hessian must have shape [..., d, d] = {tuple(score.shape) + (d,)} to match score "
            f"of shape [..., d] = {tuple(score.shape)}; got {tuple(hessian.shape)}"
        )
    if hessian.dtype != score.dtype:
        raise ValueError(f"score and hessian must share a dtype, got {score.dtype} and {hessian.dtype}")
    check_finite("score", score)
    check_finite("hessian", hessian)
    return d


def _sym(H: torch.Tensor) -> torch.Tensor:
    return 0.5 * (H + H.transpose(-1, -2))


def _unit(s: torch.Tensor):
    norm = s.norm(dim=-1)  # |s|: [...]
    s_hat = s / norm[..., None]  # NaN where s = 0: [..., d]
    return norm, s_hat


def normalized_infinity_laplacian(score: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    r"""Normalized infinity-Laplacian :math:`\hat s^\top H \hat s`, shape ``[...]`` (NaN where s = 0)."""
    _check_pair(score, hessian)
    _, s_hat = _unit(score)
    return torch.einsum("...i,...ij,...j->...", s_hat, hessian, s_hat)


def p_laplacian_from_derivatives(score: torch.Tensor, hessian: torch.Tensor, p) -> torch.Tensor:
    r"""p-Laplacian of :math:`u = \log p`, exactly, from its score and Hessian.

    .. math:: \Delta_p u = \operatorname{div}(|s|^{p-2} s) = |s|^{p-2}\,[\operatorname{tr} H + (p-2)\,\hat s^\top H \hat s]

    ``p = 2`` is the Laplacian, ``p = 1`` the divergence of the unit score
    :math:`(\operatorname{tr} H - \hat s^\top H \hat s)/|s|` (minus the sum of the principal
    curvatures of the level set), ``p = inf`` the normalized infinity-Laplacian. Shape ``[...]``.
    """
    p = check_p(p)
    _check_pair(score, hessian)
    tr = torch.diagonal(hessian, dim1=-2, dim2=-1).sum(-1)  # tr H: [...]
    if p == 2:
        return tr
    if math.isinf(p):
        return normalized_infinity_laplacian(score, hessian)
    norm, s_hat = _unit(score)
    quad = torch.einsum("...i,...ij,...j->...", s_hat, hessian, s_hat)  # s_hat^T H s_hat: [...]
    value = norm ** (p - 2) * (tr + (p - 2) * quad)
    if p > 2:  # |s|^{p-2} s is differentiable with zero derivative at s = 0
        value = torch.where(norm == 0, torch.zeros_like(value), value)
    return value


def _tangent_basis(s_hat: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``[..., d, d-1]`` of the complement of unit vectors ``s_hat`` (Householder)."""
    d = s_hat.shape[-1]
    e1 = torch.zeros_like(s_hat)
    e1[..., 0] = 1.0
    sign = torch.where(s_hat[..., :1] >= 0, 1.0, -1.0).to(s_hat.dtype)
    v = s_hat + sign * e1  # |v| >= 1, no cancellation
    R = torch.eye(d, dtype=s_hat.dtype, device=s_hat.device) - 2 * v[..., :, None] * v[..., None, :] / (
        v * v
    ).sum(-1)[..., None, None]  # R e1 = -sign * s_hat; R symmetric orthogonal
    return R[..., :, 1:]


def principal_curvatures_from_derivatives(score: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    r"""Principal curvatures of the level set of :math:`u` through each point, descending, ``[..., d-1]``.

    The eigenvalues of :math:`-P H P / |s|` on the tangent space :math:`\hat s^\perp`, with the normal
    pointing to lower density (:math:`n = -\hat s`). A sphere of radius r around the mode of an
    isotropic Gaussian has all curvatures 1/r; their sum is :math:`-\Delta_1 u`.
    """
    d = _check_pair(score, hessian)
    if d < 2:
        raise ValueError("principal curvatures need dimension d >= 2 (level sets of a 1-D function are points)")
    norm, s_hat = _unit(score)
    Q = _tangent_basis(s_hat)  # [..., d, d-1]
    M = -Q.transpose(-1, -2) @ _sym(hessian) @ Q / norm[..., None, None]  # -Q^T H Q / |s|: [..., d-1, d-1]
    if bool(torch.isnan(M).any()):
        out = torch.full(M.shape[:-1], math.nan, dtype=M.dtype, device=M.device)
        ok = ~torch.isnan(M).flatten(-2).any(-1)
        out[ok] = torch.linalg.eigvalsh(M[ok]).flip(-1)
        return out
    return torch.linalg.eigvalsh(M).flip(-1)


def mean_curvature_from_derivatives(score: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    r"""Mean curvature :math:`-\Delta_1 u / (d - 1)` of the level set, ``[...]``."""
    d = _check_pair(score, hessian)
    if d < 2:
        raise ValueError("mean curvature needs dimension d >= 2")
    return -p_laplacian_from_derivatives(score, hessian, 1) / (d - 1)


def anisotropy_index(hessian: torch.Tensor) -> torch.Tensor:
    r"""Anisotropy index :math:`A = 1 - (\sum_i l_i)^2 / (d \sum_i l_i^2)` of the eigenvalues :math:`l` of :math:`-H`.

    Computed from traces (:math:`\sum l = -\operatorname{tr} H`, :math:`\sum l^2 = \|H_{sym}\|_F^2`).
    A = 0 exactly when -H is a multiple of I; for -H positive semi-definite A lies in
    ``[0, 1 - 1/d]``; in general in ``[0, 1]``. NaN for a zero Hessian. Shape ``[...]``.
    """
    check_tensor("hessian", hessian, min_dim=2)
    d = hessian.shape[-1]
    if hessian.shape[-2] != d:
        raise ValueError(f"hessian must have shape [..., d, d], got {tuple(hessian.shape)}")
    check_finite("hessian", hessian)
    Hs = _sym(hessian)
    tr = torch.diagonal(Hs, dim1=-2, dim2=-1).sum(-1)  # -sum l
    fro2 = (Hs * Hs).sum((-2, -1))  # sum l^2
    return 1.0 - tr**2 / (d * fro2)


def _cosine(a: torch.Tensor, b: torch.Tensor, dim) -> torch.Tensor:
    dot = (a * b).sum(dim)
    return dot / (a.norm(dim=dim) * b.norm(dim=dim))  # NaN where either is zero


def _check_cos_inputs(a, b, min_dim):
    check_tensor("a", a, min_dim=min_dim)
    check_tensor("b", b, min_dim=min_dim)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def alignment_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Cosine between ``a[i]`` and ``b[i]`` over all non-batch axes, ``[B]``.

    With ``a = s_delta`` and ``b = s_u`` this is the alignment of the guidance gap with the
    unconditional score (Asthana & Belagiannis, ICLR 2026). NaN where either vector is zero.
    """
    _check_cos_inputs(a, b, 2)
    return _cosine(a.flatten(1), b.flatten(1), -1)


def alignment_cosine_per_position(a: torch.Tensor, b: torch.Tensor, *, channel_dim: int = 1) -> torch.Tensor:
    r"""Cosine over the channel axis at each spatial position, averaged over positions, ``[B]``.

    For latents ``[B, C, H, W]`` this is ``mean_{h,w} cos(a[:, :, h, w], b[:, :, h, w])``, the
    per-position alignment of Asthana & Belagiannis (ICLR 2026).
    """
    _check_cos_inputs(a, b, 3)
    if channel_dim in (0, -a.dim()):
        raise ValueError("channel_dim must not be the batch axis 0")
    cos = _cosine(a, b, channel_dim)  # [B, *positions]
    return cos.flatten(1).mean(-1)


def flipd_from_derivatives(score: torch.Tensor, hessian: torch.Tensor, sigma) -> torch.Tensor:
    r"""FLIPD local intrinsic dimension (Kamkari et al. 2024), VE form at noise ``sigma``.

    .. math:: \mathrm{LID} = d + \sigma^2 (\operatorname{tr} \nabla s + |s|^2)

    The same expression holds for a VP marginal with :math:`\sigma = \sigma_t` (rescaling
    :math:`x_t / \alpha_t` leaves it unchanged). For data on a k-dimensional affine subspace it
    tends to k as sigma -> 0. ``sigma`` is a float > 0 or a positive tensor broadcastable to ``[...]``.
    """
    d = _check_pair(score, hessian)
    if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
        check_finite("sigma", sigma)
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be > 0")
        sigma = sigma.to(score.dtype)
    else:
        sigma = check_positive("sigma", sigma)
    tr = torch.diagonal(hessian, dim1=-2, dim2=-1).sum(-1)
    return d + sigma**2 * (tr + (score * score).sum(-1))
