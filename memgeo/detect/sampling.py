r"""DDIM sampling with classifier-free guidance over the score-model interface, with trackers.

``ddim_sample`` runs deterministic DDIM (eta = 0) with
``eps = eps_u + w (eps_c - eps_u)`` (docs/conventions.md, section 2) on any score model (a conditional
mixture, the testbed or Stable Diffusion) and records, at every step, the signals its trackers
compute from the step's state: the per-step curves of trajectory tracking (Brokman et al.,
NeurReps 2025). A policy may act at each step (mitigation); it sees the state and the record so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .._checks import check_int
from ..parameterization import eps_to_x0

__all__ = ["StepState", "SampleResult", "ddim_sample", "guidance_pair", "initial_noise", "Tracker"]


def guidance_pair(model, x: torch.Tensor, t, cond):
    """``(eps_u, eps_c)``: one batched call where the model offers ``eps_pair``, else two calls."""
    if hasattr(model, "eps_pair"):
        return model.eps_pair(x, t, cond)
    return model.eps(x, t, None), model.eps(x, t, cond)


def initial_noise(model, seeds) -> torch.Tensor:
    """Pure-noise latents ``x_T`` ``[S, *event]``, one independent generator per seed (reproducible per seed)."""
    if isinstance(seeds, int):
        seeds = list(range(check_int("seeds", seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    return torch.stack([
        torch.randn(model.event_shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64).to(model.dtype)
        for s in seeds
    ])


@dataclass
class StepState:
    """What a tracker or policy sees at one sampler step.

    Attributes:
        index: step index ``i`` (0 = first, at ``t = T``-ish).
        t: the integer timestep.
        x: current latents ``x_t`` ``[S, *event]``.
        eps_u, eps_c: unconditional and conditional noise predictions.
        eps: the guided prediction ``eps_u + w (eps_c - eps_u)``.
        x0_hat: Tweedie's denoised estimate ``(x_t - sigma_t eps) / alpha_t``.
        alpha, sigma: ``alpha_t``, ``sigma_t`` (floats).
        guidance_scale: ``w`` used at this step.
        cond: the condition used at this step.
    """

    index: int
    t: int
    x: torch.Tensor
    eps_u: torch.Tensor
    eps_c: torch.Tensor
    eps: torch.Tensor
    x0_hat: torch.Tensor
    alpha: float
    sigma: float
    guidance_scale: float
    cond: object


class Tracker(Protocol):
    """``tracker(model, state) -> Tensor [S]``; ``evals_per_step`` model evaluations per sample."""

    evals_per_step: int

    def __call__(self, model, state: StepState) -> torch.Tensor: ...


@dataclass
class SampleResult:
    """Output of :func:`ddim_sample`.

    Attributes:
        x0: final latents ``[S, *event]`` (diffusers' last ``prev_sample``; it keeps ``sigma_0 eps`` of noise).
        denoised: the last step's denoised estimate ``x0_hat`` ``[S, *event]`` (noise-free).
        trace: tracker name -> values ``[n_steps, S]``.
        timesteps: the timesteps used ``[n_steps]``.
        n_evals: model evaluations per sample (sampling and trackers).
        actions: per step, what the policy changed (empty dicts where it did nothing).
    """

    x0: torch.Tensor
    denoised: torch.Tensor
    trace: dict[str, torch.Tensor]
    timesteps: torch.Tensor
    n_evals: int
    actions: list[dict] = field(default_factory=list)


def ddim_sample(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    trackers: dict[str, Callable] | None = None,
    policy: Callable | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleResult:
    """DDIM (Song et al. 2021) with classifier-free guidance and per-step trackers.

    With ``eta = 0`` (default) the update is deterministic, ``x_prev = alpha_prev x0_hat + sigma_prev eps``;
    ``eta = 1`` is ancestral (DDPM-like) sampling with fresh noise from ``generator``. After the
    last step ``alpha_prev`` is ``alpha_0`` (diffusers' ``set_alpha_to_one=False``), as Stable
    Diffusion pipelines use. ``policy(state, trace) -> dict | None`` may return
    ``{"guidance_scale": w}`` (a float, or a tensor ``[S]``: one scale per sample) and/or
    ``{"cond": c}`` to change this step's update. ``progress`` shows a tqdm bar over the steps.
    """
    from tqdm.auto import tqdm

    n_steps = check_int("n_steps", n_steps)
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    trackers = dict(trackers or {})
    ts = model.timesteps(n_steps)
    x = x_T
    record = {name: [] for name in trackers}
    actions: list[dict] = []
    n_evals = 0
    with torch.no_grad():
        for i, t in enumerate(tqdm(ts.tolist(), desc="sampling", disable=not progress, leave=False)):
            a, s = float(model.alpha(t)), float(model.sigma(t))
            eps_u, eps_c = guidance_pair(model, x, t, cond)
            n_evals += 2
            w, c = guidance_scale, cond
            eps = eps_u + w * (eps_c - eps_u)
            state = StepState(i, t, x, eps_u, eps_c, eps, eps_to_x0(eps, x, a, s), a, s, w, c)
            for name, tracker in trackers.items():
                record[name].append(tracker(model, state).detach())
                n_evals += getattr(tracker, "evals_per_step", 0)
            act = policy(state, {k: torch.stack(v) for k, v in record.items() if v}) if policy else None
            act = dict(act or {})
            if "cond" in act and act["cond"] is not c:
                c = act["cond"]
                eps_u, eps_c = guidance_pair(model, x, t, c)
                n_evals += 2
            if act:
                w = act.get("guidance_scale", w)
                if isinstance(w, torch.Tensor):  # one scale per sample
                    w = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
                eps = eps_u + w * (eps_c - eps_u)
            actions.append(act)
            x0_hat = eps_to_x0(eps, x, a, s)
            t_prev = int(ts[i + 1]) if i + 1 < len(ts) else 0
            a_prev, s_prev = float(model.alpha(t_prev)), float(model.sigma(t_prev))
            if eta > 0:  # sigma_eta^2 = eta^2 (s_prev^2 / s^2) (1 - a^2 / a_prev^2), as in DDIM
                s_eta = eta * (s_prev / s) * math.sqrt(max(0.0, 1.0 - (a / a_prev) ** 2))
                z = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.dtype).to(x.device)
                x = a_prev * x0_hat + math.sqrt(max(0.0, s_prev**2 - s_eta**2)) * eps + s_eta * z
            else:
                x = a_prev * x0_hat + s_prev * eps
    trace = {k: torch.stack(v) for k, v in record.items()}
    return SampleResult(x, x0_hat, trace, ts, n_evals, actions)
