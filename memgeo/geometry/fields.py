r"""Vector fields as batched callables, and the derivative products estimators are built from.

A *field* is a callable ``F`` taking ``x`` of shape ``[B, *event]`` and returning a tensor of the
same shape, each row depending only on its own input row (as a score model does). Estimators
flatten the event to ``d = prod(event)`` and stack probes along the batch axis, so any batched
callable works - a closed-form mixture score or a UNet - without ``vmap``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from .._checks import check_finite, check_p, check_tensor

__all__ = ["Field", "flatten_field", "jvp", "vjp", "math_attention", "power_field", "normalized_field"]

Field = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def math_attention():
    """Select PyTorch's math scaled-dot-product-attention kernel (it has forward-mode derivatives)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def check_points(x: torch.Tensor) -> torch.Tensor:
    """``x`` must be a finite floating tensor ``[B, *event]`` with at least one point."""
    check_tensor("x", x, min_dim=2)
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one point, got an empty batch of shape {tuple(x.shape)}")
    return check_finite("x", x)


_NO_AUTOGRAD = ("the field's output does not depend on x through autograd (it is detached, computed outside "
                "torch, or constant), so its {kind} would be 0; make the field differentiable, or use a "
                "derivative-free method (method='hutchinson_fd', 'flux' or 'flux_antithetic')")


def flatten_field(field: Field, event_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(y)`` on flat points ``y: [N, d]`` with ``d = prod(event_shape)``, checking the output shape."""
    if not callable(field):
        raise ValueError(f"field must be a callable x -> F(x), got {type(field).__name__}")
    d = math.prod(event_shape)

    def f(y: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        out = field(y.reshape((n,) + tuple(event_shape)))
        if not isinstance(out, torch.Tensor) or out.shape != (n,) + tuple(event_shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"field must return a tensor of its input's shape {(n,) + tuple(event_shape)}, got {got}")
        return out.reshape(n, d)

    return f


def jvp(f, y: torch.Tensor, v: torch.Tensor):
    """``(f(y), J_f(y) v)`` by forward-mode AD (math attention kernel selected).

    Raises ``ValueError`` if ``f``'s output does not depend on ``y`` through autograd.
    """
    with math_attention():
        out, tangent = torch.func.jvp(f, (y.contiguous(),), (v.contiguous(),))
    if not bool(tangent.any()) and bool(v.any()):  # J v = 0 exactly: a constant field, or no autograd at all?
        _check_forward_dependence(f, y[:1], v[:1])
    return out, tangent


def _check_forward_dependence(f, y: torch.Tensor, v: torch.Tensor) -> None:
    """Raise if ``f``'s output carries no forward-mode tangent of ``y`` (one evaluation of one row)."""
    import torch.autograd.forward_ad as fwAD

    with torch.no_grad(), math_attention(), fwAD.dual_level():
        if fwAD.unpack_dual(f(fwAD.make_dual(y.contiguous(), v.contiguous()))).tangent is None:
            raise ValueError(_NO_AUTOGRAD.format(kind="Jacobian-vector product"))


def vjp(f, y: torch.Tensor, v: torch.Tensor):
    """``(f(y), J_f(y)^T v)`` by reverse-mode AD.

    Raises ``ValueError`` if ``f``'s output does not depend on ``y`` through autograd.
    """

    def checked(z):
        out = f(z)
        if not out.requires_grad:
            raise ValueError(_NO_AUTOGRAD.format(kind="vector-Jacobian product"))
        return out

    with torch.enable_grad():
        out, pullback = torch.func.vjp(checked, y.contiguous())
        return out, pullback(v.contiguous())[0]


def power_field(field: Field, p) -> Field:
    r"""The field :math:`|F|^{p-2} F` whose divergence is the p-Laplacian (norm over the event axes)."""
    p = check_p(p)
    if math.isinf(p):
        raise ValueError("p = inf has no divergence form; use p_laplacian(..., method='exact' or 'product')")
    if p == 2:
        return field

    def G(x: torch.Tensor) -> torch.Tensor:
        F = field(x)
        norm = F.flatten(1).norm(dim=-1).reshape((-1,) + (1,) * (F.dim() - 1))
        return norm ** (p - 2) * F

    return G


def normalized_field(field: Field) -> Field:
    r"""The direction-only field :math:`F / |F|` (``power_field(field, 1)``)."""
    return power_field(field, 1)
