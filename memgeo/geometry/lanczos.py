r"""Extreme eigenvalues of Jacobians and level-set curvatures by Lanczos on Jacobian-vector products.

No ``d x d`` matrix is formed: each Lanczos step costs one JVP per point (two, a JVP and a VJP,
when the Jacobian of a learned field is symmetrized). With full re-orthogonalization and
``n_iter`` equal to the dimension of the space, the Ritz values are the exact spectrum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_int
from .fields import Field, check_points, flatten_field, jvp, vjp

__all__ = ["Spectrum", "lanczos", "hessian_eigenvalues", "principal_curvatures"]

WHICH = ("largest", "smallest", "magnitude")


@dataclass(frozen=True)
class Spectrum:
    """Ritz values per point.

    Attributes:
        values: ``[B, k]``, ordered as requested (descending for ``"largest"`` and ``"magnitude"``,
            ascending for ``"smallest"``).
        n_evals, n_jvps, n_vjps: cost per point.
        n_iter: Lanczos iterations used.
    """

    values: torch.Tensor
    n_evals: int
    n_jvps: int
    n_vjps: int
    n_iter: int


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove from ``w: [B, d]`` its components along the orthonormal rows of ``basis: [B, m, d]`` (twice)."""
    for _ in range(2):
        w = w - torch.einsum("bm,bmd->bd", torch.einsum("bmd,bd->bm", basis, w), basis)
    return w


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    n_iter: int,
    *,
    constraint: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Ritz values (ascending, ``[B, n_iter]``) of a batched symmetric operator by Lanczos.

    Args:
        matvec: ``V: [B, d] -> A V`` applying one symmetric ``d x d`` operator per row.
        v0: start vectors ``[B, d]``.
        n_iter: Krylov dimension (at most the dimension of the space).
        constraint: optional unit vectors ``[B, d]``; the iteration stays in their orthogonal complement.
        generator: for restarts when a Krylov space becomes invariant before ``n_iter`` steps.
    """
    B, d = v0.shape
    fixed = constraint[:, None, :] if constraint is not None else v0.new_zeros(B, 0, d)
    q = _orthogonalize(v0, fixed)
    q = q / q.norm(dim=-1, keepdim=True)
    Q = [q]
    alphas, betas = [], []
    for j in range(n_iter):
        w = matvec(Q[-1])
        a = (w * Q[-1]).sum(-1)
        alphas.append(a)
        if j == n_iter - 1:
            break
        w = _orthogonalize(w, torch.cat([fixed, torch.stack(Q, 1)], 1))  # full re-orthogonalization
        b = w.norm(dim=-1)
        scale = torch.stack([x.abs() for x in alphas], 1).amax(1).clamp_min(1e-300)
        dead = b <= 1e-10 * scale  # invariant subspace found: restart with a fresh direction, beta = 0
        if bool(dead.any()):
            fresh = torch.randn(B, d, generator=generator, dtype=v0.dtype).to(v0.device)
            fresh = _orthogonalize(fresh, torch.cat([fixed, torch.stack(Q, 1)], 1))
            w = torch.where(dead[:, None], fresh / fresh.norm(dim=-1, keepdim=True), w / b.clamp_min(1e-300)[:, None])
            b = torch.where(dead, torch.zeros_like(b), b)
        else:
            w = w / b[:, None]
        betas.append(b)
        Q.append(w)
    T = torch.diag_embed(torch.stack(alphas, 1))
    if betas:
        off = torch.diag_embed(torch.stack(betas, 1), offset=1)
        T = T + off + off.transpose(-1, -2)
    return torch.linalg.eigvalsh(T)


def _select(ritz: torch.Tensor, k: int, which: str) -> torch.Tensor:
    if which == "largest":
        return ritz.flip(-1)[:, :k]
    if which == "smallest":
        return ritz[:, :k]
    if which == "magnitude":
        idx = ritz.abs().argsort(dim=-1, descending=True)[:, :k]
        return ritz.gather(-1, idx)
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")


def _operator(field: Field, x: torch.Tensor, symmetrize: bool):
    B, d = x.shape[0], math.prod(x.shape[1:])
    f = flatten_field(field, tuple(x.shape[1:]))
    y = x.reshape(B, d).contiguous()

    def matvec(V):
        Jv = jvp(f, y, V)[1]
        return 0.5 * (Jv + vjp(f, y, V)[1]) if symmetrize else Jv

    return f, y, matvec


def hessian_eigenvalues(
    field: Field,
    x: torch.Tensor,
    k: int = 1,
    *,
    n_iter: int | None = None,
    which: str = "largest",
    symmetrize: bool = False,
    generator: torch.Generator | None = None,
) -> Spectrum:
    r"""Top-k eigenvalues of :math:`J = \nabla F` (the Hessian of log p when F is a score) by Lanczos.

    Args:
        field: batched field ``[B, *event] -> [B, *event]``.
        x: points ``[B, *event]``.
        k: number of eigenvalues.
        n_iter: Lanczos iterations (default ``min(d, max(2k + 10, 30))``); ``n_iter = d`` is exact.
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        symmetrize: use :math:`(J + J^\top)/2` (a JVP and a VJP per step), for learned fields.
    """
    x = check_points(x)
    d = math.prod(x.shape[1:])
    k = check_int("k", k)
    if k > d:
        raise ValueError(f"k must be <= d = {d}, got {k}")
    m = check_int("n_iter", n_iter if n_iter is not None else min(d, max(2 * k + 10, 30)))
    if m < k or m > d:
        raise ValueError(f"n_iter must lie in [k, d] = [{k}, {d}], got {m}")
    _, y, matvec = _operator(field, x, symmetrize)
    v0 = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    ritz = lanczos(matvec, v0, m, generator=generator)
    return Spectrum(_select(ritz, k, which), 0, m, m if symmetrize else 0, m)


def principal_curvatures(
    field: Field,
    x: torch.Tensor,
    k: int = 1,
    *,
    n_iter: int | None = None,
    which: str = "largest",
    symmetrize: bool = False,
    generator: torch.Generator | None = None,
) -> Spectrum:
    r"""Top-k principal curvatures of the level set of the potential of a score field, by Lanczos.

    Eigenvalues of :math:`-P J P / |F|` on the tangent space :math:`\hat F^\perp`
    (docs/conventions.md, section 2; normal towards lower density). ``n_iter = d - 1`` is exact.
    """
    x = check_points(x)
    d = math.prod(x.shape[1:])
    if d < 2:
        raise ValueError("principal curvatures need dimension d >= 2")
    k = check_int("k", k)
    if k > d - 1:
        raise ValueError(f"k must be <= d - 1 = {d - 1}, got {k}")
    m = check_int("n_iter", n_iter if n_iter is not None else min(d - 1, max(2 * k + 10, 30)))
    if m < k or m > d - 1:
        raise ValueError(f"n_iter must lie in [k, d - 1] = [{k}, {d - 1}], got {m}")
    f, y, matvec = _operator(field, x, symmetrize)
    F = f(y)
    norm = F.norm(dim=-1)
    if bool((norm == 0).any()):
        raise ValueError("principal curvatures are undefined where the field vanishes (a critical point)")
    n_hat = F / norm[:, None]

    def tangent_op(V):
        PV = V - (V * n_hat).sum(-1, keepdim=True) * n_hat
        W = -matvec(PV) / norm[:, None]
        return W - (W * n_hat).sum(-1, keepdim=True) * n_hat

    v0 = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    ritz = lanczos(tangent_op, v0, m, constraint=n_hat, generator=generator)
    return Spectrum(_select(ritz, k, which), 1, m, m if symmetrize else 0, m)
