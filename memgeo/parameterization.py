r"""Conversions between a diffusion model's output and the score, in one place (docs/conventions.md, section 2).

With ``x_t = alpha_t x_0 + sigma_t eps``:

* epsilon: ``s = -eps_hat / sigma_t``;
* v (``v = alpha_t eps - sigma_t x_0``): ``eps_hat = sigma_t x_t + alpha_t v_hat`` when
  ``alpha_t^2 + sigma_t^2 = 1`` (VP); in general
  ``eps_hat = (sigma_t x_t + alpha_t v_hat) / (alpha_t^2 + sigma_t^2)``;
* sample (x_0): ``s = (alpha_t x0_hat - x_t) / sigma_t^2``, i.e. ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``;
* flow (velocity ``v = eps - x_0``, rectified flow / Stable Diffusion 3, ``x_t = (1 - t) x_0 + t eps``):
  ``x_0 = eps - v`` in ``x_t = alpha_t x_0 + sigma_t eps`` gives ``x_t = (alpha_t + sigma_t) eps - alpha_t v``, so
  ``eps_hat = (x_t + alpha_t v_hat) / (alpha_t + sigma_t)`` and ``x0_hat = (x_t - sigma_t v_hat) / (alpha_t + sigma_t)``.

:func:`to_x0` reads the denoised estimate from the raw output directly: unlike ``(x_t - sigma_t eps_hat) / alpha_t``
it is defined at pure noise (``alpha_t = 0``, a flow model's first step) for every type but epsilon.

``alpha`` and ``sigma`` are floats or tensors broadcastable against ``x`` (for example ``[B, 1, 1, 1]``).
"""

from __future__ import annotations

import torch

__all__ = [
    "PREDICTION_TYPES",
    "to_eps",
    "from_eps",
    "eps_to_score",
    "score_to_eps",
    "eps_to_x0",
    "to_x0",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def _check_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def to_eps(pred: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """The noise prediction ``eps_hat`` from a model output of the given ``prediction_type``."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":
        return (sigma * x + alpha * pred) / (alpha**2 + sigma**2)  # v = alpha eps - sigma x0
    if prediction_type == "flow":
        return (x + alpha * pred) / (alpha + sigma)  # v = eps - x0
    return (x - alpha * pred) / sigma  # pred = x0_hat


def to_x0(pred: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """The denoised estimate ``x0_hat`` from a model output of the given ``prediction_type``."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return eps_to_x0(pred, x, alpha, sigma)
    if prediction_type == "v_prediction":
        return (alpha * x - sigma * pred) / (alpha**2 + sigma**2)
    if prediction_type == "flow":
        return (x - sigma * pred) / (alpha + sigma)
    return pred


def from_eps(eps: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction_type: str) -> torch.Tensor:
    """The model output of ``prediction_type`` that corresponds to the noise prediction ``eps``."""
    _check_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    x0 = eps_to_x0(eps, x, alpha, sigma)
    if prediction_type == "v_prediction":
        return alpha * eps - sigma * x0
    if prediction_type == "flow":
        return eps - x0
    return x0


def eps_to_x0(eps: torch.Tensor, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Tweedie's denoised estimate ``x0_hat = (x_t - sigma_t eps_hat) / alpha_t``."""
    return (x - sigma * eps) / alpha


def eps_to_score(eps: torch.Tensor, sigma) -> torch.Tensor:
    r"""``s = -eps_hat / sigma_t``."""
    return -eps / sigma


def score_to_eps(score: torch.Tensor, sigma) -> torch.Tensor:
    r"""``eps_hat = -sigma_t s``."""
    return -sigma * score
