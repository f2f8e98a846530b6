"""An analytic stand-in for a UNet: the exact eps (or v, or x0) of a conditional Gaussian mixture.

``AnalyticUNet`` has ``UNet2DConditionModel``'s call signature and returns, for latents of shape
``[B, *event]`` (flattened to the mixture's dimension), the exact prediction of a
:class:`~memgeo.gmm.ConditionalGaussianMixture` in the requested parameterization. The condition
is read from the prompt embedding (see :func:`oracle_prompt_encoder`), so a
:class:`~memgeo.models.DiffusersScoreModel` built on it must reproduce the mixture's closed forms
exactly: it checks the whole adapter - conversions, batching, guidance pairs, JVPs, signals.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Sequence

import torch

from ..gmm import ConditionalGaussianMixture
from ..parameterization import from_eps

__all__ = ["AnalyticUNet", "oracle_prompt_encoder", "oracle_score_model", "oracle_prompt"]


def oracle_prompt(c: int | None) -> str:
    """The prompt that names condition ``c`` (``""`` for the unconditional branch)."""
    return "" if c is None else f"condition {c}"


def oracle_prompt_encoder(n_conditions: int, dim: int = 4):
    """``list[str] -> [N, 1, dim]`` embeddings whose first entry is the condition index + 1 (0: unconditional)."""

    def encode(prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), 1, dim)
        for i, p in enumerate(prompts):
            if p == "":
                continue
            if not p.startswith("condition ") or not p.split()[-1].isdigit() or int(p.split()[-1]) >= n_conditions:
                raise ValueError(f"the oracle knows the prompts 'condition 0' .. 'condition {n_conditions - 1}', got {p!r}")
            out[i, 0, 0] = int(p.split()[-1]) + 1
        return out

    return encode


class AnalyticUNet(torch.nn.Module):
    """``unet(sample, timestep, encoder_hidden_states) -> .sample``, exact for a conditional mixture."""

    def __init__(self, mixture: ConditionalGaussianMixture, event_shape: Sequence[int], prediction_type: str = "epsilon"):
        super().__init__()
        if math.prod(event_shape) != mixture.dim:
            raise ValueError(f"event_shape {tuple(event_shape)} must hold the mixture's {mixture.dim} dimensions")
        self.mixture = mixture
        self.event_shape = tuple(event_shape)
        self.prediction_type = prediction_type

    def forward(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **_):
        B = sample.shape[0]
        x = sample.reshape(B, -1)
        cond = encoder_hidden_states[:, 0, 0].detach().round().long() - 1  # -1: unconditional
        t = torch.as_tensor(timestep).reshape(-1).expand(B) if torch.as_tensor(timestep).numel() == 1 else torch.as_tensor(timestep)
        parts, index = [], []
        for key in torch.unique(torch.stack([t.cpu(), cond.cpu()], 1), dim=0):  # functional grouping (JVP-safe)
            rows = torch.nonzero((t.cpu() == key[0]) & (cond.cpu() == key[1])).reshape(-1)
            tk, ck = int(key[0]), int(key[1])
            xr = x[rows]
            eps = self.mixture.eps(xr, tk, None if ck < 0 else ck)
            a, s = float(self.mixture.alpha(tk)), float(self.mixture.sigma(tk))
            parts.append(from_eps(eps, xr, a, s, self.prediction_type))
            index.append(rows)
        out = torch.cat(parts)[torch.argsort(torch.cat(index))].reshape(sample.shape)
        return SimpleNamespace(sample=out) if return_dict else (out,)


def oracle_score_model(
    mixture: ConditionalGaussianMixture,
    event_shape: Sequence[int],
    prediction_type: str = "epsilon",
):
    """A :class:`~memgeo.models.DiffusersScoreModel` whose UNet is the mixture's exact prediction."""
    from .adapter import DiffusersScoreModel

    unet = AnalyticUNet(mixture, event_shape, prediction_type)
    return DiffusersScoreModel(
        unet, mixture.schedule, oracle_prompt_encoder(mixture.n_conditions),
        prediction_type=prediction_type, event_shape=event_shape, dtype=mixture.dtype,
    )
