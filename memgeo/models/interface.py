"""The score-model interface: what every model offers, analytic or learned (docs/conventions.md, section 1).

Signals, mitigation and explanation see a model only through these methods. A conditional
Gaussian mixture, the testbed and Stable Diffusion all implement :class:`ScoreModel`; models with a
text encoder also implement :class:`PromptModel`, which token-level explanation needs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["ScoreModel", "PromptModel"]


@runtime_checkable
class ScoreModel(Protocol):
    """A conditional diffusion model as a score field, for a batch ``x`` ``[B, *event_shape]``.

    ``cond`` is what the model is conditioned on (a class index or logits for a mixture, a prompt,
    a list of prompts or prompt embeddings for a diffusers model); ``cond=None`` is the
    unconditional branch. Optional capabilities, used where present: ``eps_pair(x, t, cond)`` (both
    branches in one batched call), ``condition_embedding(cond)`` (a differentiable embedding the
    model accepts back as ``cond``), ``prediction_type`` (the raw output's parameterization),
    ``identity`` (name and weight fingerprint, for result stores), ``folder`` (the local folder it
    was loaded from).
    """

    event_shape: tuple[int, ...]
    dtype: torch.dtype

    def eps(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The noise prediction ``[B, *event_shape]``."""

    def score(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """``grad_x log p_t(x | cond)`` ``[B, *event_shape]``."""

    def alpha(self, t) -> torch.Tensor:
        """``alpha_t`` of ``x_t = alpha_t x_0 + sigma_t eps``."""

    def sigma(self, t) -> torch.Tensor:
        """``sigma_t`` of ``x_t = alpha_t x_0 + sigma_t eps``."""

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """The ``n_steps`` discrete timesteps a sampler visits, first (noisiest) first."""


@runtime_checkable
class PromptModel(ScoreModel, Protocol):
    """A text-conditioned score model with its tokenizer: token-level explanation needs these."""

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """The prompt's token ids as the text encoder reads them."""

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's tokens, readable."""

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[L, D]`` from token ids."""

    def condition_embedding(self, cond) -> torch.Tensor:
        """A differentiable embedding of ``cond`` that the model accepts back as a condition."""
