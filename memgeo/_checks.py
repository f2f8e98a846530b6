"""Input validation shared by every public function.

Each helper raises ``ValueError`` naming the offending argument and the expected form;
nothing is reshaped, cast or clamped silently.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

__all__ = [
    "check_tensor",
    "check_finite",
    "check_p",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_same_shape",
]


def check_tensor(name: str, value, *, min_dim: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``value`` if it is a floating tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {value.dtype} (convert it explicitly)")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise if ``value`` holds NaN or infinity."""
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite, but it contains NaN or infinity")
    return value


def check_p(p) -> float:
    """Validate the exponent of a p-Laplacian: a real number >= 1 or ``inf``/``'inf'``."""
    if isinstance(p, str):
        if p.lower() in {"inf", "infinity"}:
            return math.inf
        raise ValueError(f"p must be a real number >= 1 or 'inf', got {p!r}")
    if isinstance(p, torch.Tensor) and p.numel() == 1:
        p = float(p)
    if not isinstance(p, Real) or isinstance(p, bool):
        raise ValueError(f"p must be a real number >= 1 or 'inf', got {p!r}")
    p = float(p)
    if math.isnan(p) or p < 1:
        raise ValueError(f"p must be >= 1 (p-Laplacians are defined for p in [1, inf]), got {p}")
    return p


def _as_float(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number > 0."""
    value = _as_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_nonnegative(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0."""
    value = _as_float(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise if two tensors differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
