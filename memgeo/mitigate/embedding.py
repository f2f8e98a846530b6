"""Prompt-embedding adaptation (Wen et al., ICLR 2024; Asthana & Belagiannis, ICLR 2026)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._checks import check_int, check_positive
from .presets import AdaptEmbeddingSettings
from ..guidance import OBJECTIVES, gap_objective, objective_times

__all__ = ["condition_embedding", "ADAPT_OBJECTIVES", "AdaptedEmbedding", "adapt_embedding"]


def condition_embedding(model, cond) -> torch.Tensor:
    """A differentiable embedding of ``cond`` that the model accepts back as a condition."""
    if hasattr(model, "condition_embedding"):
        return model.condition_embedding(cond).detach().clone()
    if hasattr(model, "embed"):
        return model.embed(cond, 1)[0].detach().clone()
    raise ValueError(f"{type(model).__name__} offers no condition embedding (needs condition_embedding or embed)")


#: The objectives prompt-embedding adaptation descends (:data:`memgeo.guidance.OBJECTIVES`).
ADAPT_OBJECTIVES = ("guidance_norm", "anisotropy")


@dataclass
class AdaptedEmbedding:
    """Result of :func:`adapt_embedding`.

    Attributes:
        embedding: the adapted embedding (pass it as ``cond``).
        losses: objective (mean over seeds) before each step.
        converged: whether the objective reached the target.
        n_evals: model evaluations per sample (forward passes; each backward counted as one more).
    """

    embedding: torch.Tensor
    losses: list[float] = field(default_factory=list)
    converged: bool = False
    n_evals: int = 0


def adapt_embedding(
    model,
    cond,
    x_T: torch.Tensor,
    settings: AdaptEmbeddingSettings | None = None,
    *,
    preset: str = "memgeo",
    objective: str = "guidance_norm",
    n_steps: int = 50,
    weights="auto",
    **options,
) -> AdaptedEmbedding:
    """Adapt the condition's embedding by gradient descent on a memorization objective at the first timestep.

    Stops when the objective reaches ``target`` (absolute) or ``relative_target`` times its initial
    value, or after ``max_iters`` steps. ``loss="mean"``: the mean over ``x_T``'s seeds of the
    per-sample objective; ``"frobenius"``: one Frobenius norm of the gap over all seeds together.

    memgeo preset: Adam, lr 0.05, at most 30 steps, down to half the initial objective. official
    preset (Wen et al. 2024's released code): AdamW, lr 0.05, 10 steps, absolute target 3 (set on
    SD), the Frobenius loss, and the gradient of the start-of-text token zeroed
    (``freeze_start_token``; prompt embeddings ``[L, D]`` only). The options are the fields of
    :class:`~memgeo.mitigate.presets.AdaptEmbeddingSettings`: ``settings`` (else the preset ``preset``), each
    option given as a keyword replacing its field.
    """
    opts = AdaptEmbeddingSettings.resolve(settings, preset, **options).as_options()
    max_iters = check_int("max_iters", opts["max_iters"], minimum=0)
    check_positive("lr", opts["lr"])
    if opts["optimizer"] not in ("adam", "adamw") or opts["loss"] not in ("mean", "frobenius"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw' and loss 'mean' or 'frobenius', "
                         f"got {opts['optimizer']!r} and {opts['loss']!r}")
    if objective not in ADAPT_OBJECTIVES:
        raise ValueError(f"objective must be one of {ADAPT_OBJECTIVES}, got {objective!r}")
    if opts["loss"] == "frobenius" and objective != "guidance_norm":
        raise ValueError("loss='frobenius' applies to objective='guidance_norm' only")
    emb = condition_embedding(model, cond).requires_grad_(True)
    freeze = bool(opts["freeze_start_token"]) and emb.dim() == 2
    opt = (torch.optim.AdamW if opts["optimizer"] == "adamw" else torch.optim.Adam)([emb], lr=opts["lr"])
    per_iter = OBJECTIVES[objective].evaluations
    times = objective_times(model, n_steps)
    res = AdaptedEmbedding(emb.detach())
    goal = opts["target"]
    for _ in range(max_iters + 1):
        with torch.enable_grad():
            per_sample = gap_objective(model, x_T, emb, objective, times, weights)
            value = per_sample.pow(2).sum().sqrt() if opts["loss"] == "frobenius" else per_sample.mean()
        res.losses.append(float(value.detach()))
        res.n_evals += per_iter
        if goal is None and opts["relative_target"] is not None:
            goal = opts["relative_target"] * res.losses[0]
        if goal is not None and res.losses[-1] <= goal:
            res.converged = True
            break
        if len(res.losses) > max_iters:
            break
        opt.zero_grad()
        value.backward()
        res.n_evals += per_iter  # the backward pass
        if freeze:
            emb.grad[0] = 0.0  # the start-of-text token stays as it is
        opt.step()
    res.embedding = emb.detach()
    return res
