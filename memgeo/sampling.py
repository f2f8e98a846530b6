"""DDIM sampling with classifier-free guidance over the score-model interface, with trackers.

``ddim_sample`` runs deterministic DDIM (eta = 0) with
``eps = eps_u + w (eps_c - eps_u)`` (docs/conventions.md, section 2) on any score model (a conditional
mixture, the testbed or Stable Diffusion) and records, at every step, the signals its trackers
compute from the step's state: the per-step curves of trajectory tracking (Brokman et al.,
NeurReps 2025). A policy may act at each step (mitigation); it sees the state and the record so far.

The trackers that run inside the sampler live here too: the guidance norm, kappa-delta on its
sphere of probes, the branch cosines of the same probes, and a latent recorder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ._checks import check_int
from ._util import draw_rows
from .guidance import guidance_pair, raw_prediction, sample_norm
from .parameterization import eps_to_x0

__all__ = ["StepState", "SampleResult", "Tracker", "ddim_sample", "initial_noise", "sphere_directions",
    "repeat_cond", "GuidanceNormTracker", "KappaDeltaTracker", "ProbeCosineTracker", "LatentRecorder",
    "trajectory_trackers"]


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
        update_norms: the norm of each step's own update ``|x_{t_prev} - x_t|`` (L2 over the latent) ``[steps, S]``,
            which sampling computes anyway (no evaluation).
    """

    x0: torch.Tensor
    denoised: torch.Tensor
    trace: dict[str, torch.Tensor]
    timesteps: torch.Tensor
    n_evals: int
    actions: list[dict] = field(default_factory=list)
    update_norms: torch.Tensor | None = None


def _branches(model, x: torch.Tensor, t, cond, a: float, s: float):
    """``(eps_u, eps_c, x0_pair)`` at one step (2 evaluations per row). At pure noise (``alpha_t = 0``, a flow
    model's first step) eps is ``x / sigma`` in both branches and only the raw outputs carry the condition:
    ``x0_pair`` is then both branches' denoised estimates, else None."""
    if a > 0:
        return (*guidance_pair(model, x, t, cond), None)
    if not hasattr(model, "denoised_pair"):
        raise ValueError(f"{type(model).__name__} has alpha_t = 0 at t = {t} but offers no denoised_pair: "
                         "the sampler cannot read x0 from eps at pure noise")
    eps = x / s
    return eps, eps, model.denoised_pair(x, t, cond)


def _guided_x0(eps: torch.Tensor, x: torch.Tensor, a: float, s: float, w, x0_pair) -> torch.Tensor:
    """The guided denoised estimate: from the guided eps (``alpha_t > 0``), or the guided mix of both branches'
    x0 (pure noise). For ``alpha_t > 0`` the two agree: x0 is affine in eps with the same offset in both branches."""
    if x0_pair is None:
        return eps_to_x0(eps, x, a, s)
    x0_u, x0_c = x0_pair
    return x0_u + w * (x0_c - x0_u)


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
    stop_after: int | None = None,
) -> SampleResult:
    """DDIM (Song et al. 2021) with classifier-free guidance and per-step trackers.

    With ``eta = 0`` (default) the update is deterministic, ``x_prev = alpha_prev x0_hat + sigma_prev eps``;
    ``eta = 1`` is ancestral (DDPM-like) sampling with fresh noise from ``generator``. After the
    last step ``alpha_prev`` is ``alpha_0`` (diffusers' ``set_alpha_to_one=False``), as Stable
    Diffusion pipelines use. ``policy(state, trace) -> dict | None`` may return
    ``{"guidance_scale": w}`` (a float, or a tensor ``[S]``: one scale per sample) and/or
    ``{"cond": c}`` to change this step's update. ``progress`` shows a tqdm bar over the steps.
    ``stop_after``: run only the first that many steps of the ``n_steps`` schedule (``x0`` is then the latents
    after them, ``denoised`` the last step's estimate).
    """
    from tqdm.auto import tqdm

    n_steps = check_int("n_steps", n_steps)
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    trackers = dict(trackers or {})
    ts = model.timesteps(n_steps)
    if stop_after is not None and not 1 <= check_int("stop_after", stop_after) <= len(ts):
        raise ValueError(f"stop_after must lie in [1, n_steps={len(ts)}], got {stop_after}")
    run = ts if stop_after is None else ts[:stop_after]
    updates = []
    x = x_T
    record = {name: [] for name in trackers}
    actions: list[dict] = []
    n_evals = 0
    with torch.no_grad():
        for i, t in enumerate(tqdm(run.tolist(), desc="sampling", disable=not progress, leave=False)):
            a, s = float(model.alpha(t)), float(model.sigma(t))
            w, c = guidance_scale, cond
            eps_u, eps_c, x0_pair = _branches(model, x, t, cond, a, s)
            eps = eps_u + w * (eps_c - eps_u)
            n_evals += 2
            state = StepState(i, t, x, eps_u, eps_c, eps, _guided_x0(eps, x, a, s, w, x0_pair), a, s, w, c)
            for name, tracker in trackers.items():
                record[name].append(tracker(model, state).detach())
                n_evals += getattr(tracker, "evals_per_step", 0)
            act = policy(state, {k: torch.stack(v) for k, v in record.items() if v}) if policy else None
            act = dict(act or {})
            if "cond" in act and act["cond"] is not c:
                c = act["cond"]
                eps_u, eps_c, x0_pair = _branches(model, x, t, c, a, s)
                n_evals += 2
            if act:
                w = act.get("guidance_scale", w)
                if isinstance(w, torch.Tensor):  # one scale per sample
                    w = w.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
                eps = eps_u + w * (eps_c - eps_u)
            actions.append(act)
            x0_hat = _guided_x0(eps, x, a, s, w, x0_pair)
            t_prev = ts[i + 1].item() if i + 1 < len(ts) else 0
            a_prev, s_prev = float(model.alpha(t_prev)), float(model.sigma(t_prev))
            if eta > 0:  # sigma_eta^2 = eta^2 (s_prev^2 / s^2) (1 - a^2 / a_prev^2), as in DDIM
                s_eta = eta * (s_prev / s) * math.sqrt(max(0.0, 1.0 - (a / a_prev) ** 2))
                z = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.dtype).to(x.device)
                x_prev = a_prev * x0_hat + math.sqrt(max(0.0, s_prev**2 - s_eta**2)) * eps + s_eta * z
            else:
                x_prev = a_prev * x0_hat + s_prev * eps
            updates.append((x_prev - x).flatten(1).norm(dim=1))
            x = x_prev
    trace = {k: torch.stack(v) for k, v in record.items()}
    return SampleResult(x, x0_hat, trace, run, n_evals, actions, torch.stack(updates))


def sphere_directions(n: int, like: torch.Tensor, generator) -> torch.Tensor:
    """``n`` uniform unit directions per row of ``like``: ``[n, S, *event]``."""
    N = draw_rows(lambda g, r: torch.randn((n, r, *like.shape[1:]), generator=g, dtype=torch.float64), generator,
                  like.shape[0], 1)
    N = N / N.flatten(2).norm(dim=-1).reshape(n, like.shape[0], *([1] * (like.dim() - 1)))
    return N.to(like.dtype).to(like.device)


def repeat_cond(cond, m: int, S: int):
    """A condition for ``m`` stacked copies of an ``S``-row batch (per-row conditions are repeated)."""
    per_row = isinstance(cond, (list, tuple)) or (
        isinstance(cond, torch.Tensor) and ((not cond.is_floating_point() and cond.dim() == 1) or cond.dim() == 3)
    )  # lists, per-row indices [S] and per-row embeddings [S, L, D]; logits [C] and embeddings [L, D] are shared
    if not per_row:
        return cond
    if isinstance(cond, torch.Tensor):
        return cond.repeat(m, *([1] * (cond.dim() - 1)))
    return list(cond) * m


class GuidanceNormTracker:
    """Per-step guidance norm ``|eps_c - eps_u|`` (Wen et al. 2024, averaged over steps); free.

    ``space="prediction"``: the gap of the model's raw outputs (v on v-prediction models)."""

    evals_per_step = 0

    def __init__(self, space: str = "eps"):
        self.space = space

    def __call__(self, model, state: StepState) -> torch.Tensor:
        if self.space == "prediction":
            return sample_norm(raw_prediction(model, state.eps_c, state.x, state.t)
                         - raw_prediction(model, state.eps_u, state.x, state.t))
        return sample_norm(state.eps_c - state.eps_u)


class _SphereTracker:
    r"""Both branches on the kappa-delta sphere of a step: radius :math:`\sigma_t\sqrt d` around
    :math:`\alpha_t\hat x_0`, ``n_directions`` directions, 2 evaluations each (the batched branches)."""

    def __init__(self, n_directions: int = 4, *, generator: torch.Generator | None = None, relative_floor: float = 1e-6):
        self.n_directions = check_int("n_directions", n_directions, minimum=1)
        self.relative_floor = relative_floor
        self.evals_per_step = 2 * self.n_directions
        self.generator = generator

    def cosines(self, model, state: StepState, fields) -> list[torch.Tensor]:
        """For each ``fields(eps_u, eps_c)`` entry (``[n, S, d]`` each), its mean cosine with the outward
        normal ``[S]``. Where a field is below ``relative_floor`` times the predictions' norm (no direction
        above round-off, e.g. the gap where the condition's posterior is saturated) it counts as 0."""
        S, m = state.x.shape[0], self.n_directions
        r = state.sigma * math.sqrt(math.prod(state.x.shape[1:]))
        n = sphere_directions(m, state.x, self.generator)  # [n, S, *event]
        pts = (state.alpha * state.x0_hat.unsqueeze(0) + r * n).reshape(m * S, *state.x.shape[1:])
        eps_u, eps_c = (v.reshape(m, S, -1) for v in guidance_pair(model, pts, state.t, repeat_cond(state.cond, m, S)))
        n = n.reshape(m, S, -1)
        scale = torch.maximum(eps_c.norm(dim=-1), eps_u.norm(dim=-1)).unsqueeze(-1)
        out = []
        for v in fields(eps_u, eps_c):
            norm = v.norm(dim=-1, keepdim=True)
            unit = torch.where(norm > self.relative_floor * scale, v / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                               torch.zeros_like(v))
            out.append((unit * n).sum(-1).mean(0))
        return out


class KappaDeltaTracker(_SphereTracker):
    r"""Per-step kappa-delta (Brokman et al., NeurReps 2025): the mean cosine of the guidance-gap field
    with the outward normal on a sphere around the step's denoised estimate.

    :math:`\kappa_\delta = \frac1n\sum_j \langle \hat s_\delta(\alpha_t\hat x_0 + r n_j), n_j\rangle`
    with :math:`s_\delta = -\Delta\epsilon/\sigma_t` and :math:`r = \sigma_t\sqrt d`, 2 evaluations per
    direction (the batched branches). It lies in [-1, 1] at every step: the boundary flux of the unit
    field is :math:`\frac{d}{r}\kappa_\delta`, whose factor :math:`1/\sigma_t` would make the last steps
    dominate any average over steps (conventions, section 3). Where the gap is below ``relative_floor``
    (1e-6) times the predictions' norm - the posterior of the condition is saturated and the gap's
    direction is round-off - it contributes zero.
    """

    def __call__(self, model, state: StepState) -> torch.Tensor:
        # s_delta = -(eps_c - eps_u) / sigma_t: the direction of grad log p_t(c | x)
        return self.cosines(model, state, lambda eps_u, eps_c: [eps_u - eps_c])[0]


class ProbeCosineTracker(_SphereTracker):
    r"""What drives kappa-delta, per step: on the same sphere of probes, the mean cosines with the
    outward normal ``n`` of the conditional prediction, the unconditional prediction and their gap,
    ``[3, S]`` = (:math:`\cos(\epsilon_c, n)`, :math:`\cos(\epsilon_u, n)`, :math:`\cos(\epsilon_c - \epsilon_u, n)`).

    Around a basin that a branch has learned, its prediction points outwards (the noise it removes),
    so its cosine is near 1. kappa-delta is minus the gap's cosine: it falls (reads as memorization)
    when the conditional branch points outwards more than the unconditional one, and rises when the
    unconditional branch has learned the basin as well (:func:`~memgeo.detect.branch_diagnostic`).
    """

    def __call__(self, model, state: StepState) -> torch.Tensor:
        return torch.stack(self.cosines(model, state, lambda eps_u, eps_c: [eps_c, eps_u, eps_c - eps_u]))


class LatentRecorder:
    """Records ``x_t`` at every step (no evaluations); returns zeros."""

    evals_per_step = 0

    def __init__(self):
        self.latents: list[torch.Tensor] = []

    def __call__(self, model, state: StepState) -> torch.Tensor:
        self.latents.append(state.x)
        return torch.zeros(state.x.shape[0], dtype=state.x.dtype)


def trajectory_trackers(n_directions: int = 4, *, generator: torch.Generator | None = None) -> dict:
    """The direction and magnitude of the guidance gap at every step: ``{"kappa_delta": ..., "guidance_norm": ...}``,
    the pair that trajectory tracking, the mid-generation criterion and steering read."""
    return {"kappa_delta": KappaDeltaTracker(n_directions, generator=generator), "guidance_norm": GuidanceNormTracker()}
