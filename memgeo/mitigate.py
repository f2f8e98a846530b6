"""Mitigation: generate without copying training data, over the score-model interface.

Three published families, each runnable on a conditional mixture, the testbed or Stable Diffusion:

* :func:`adapt_embedding` - prompt-embedding adaptation (Wen et al., ICLR 2024; Asthana &
  Belagiannis, ICLR 2026): gradient descent on the condition's embedding to reduce a
  differentiable memorization signal (the guidance norm, or the anisotropy signal), stopping at a
  target; generation then uses the adapted embedding.
* :func:`optimize_noise` - initial-noise optimization (Jeon et al., ICML 2025, SAIL): gradient
  descent on ``x_T`` to reduce the sharpness proxy (or the guidance norm) with a penalty that keeps
  ``|x_T|^2`` at its initial value (its Gaussian likelihood level), accepting each latent once its
  proxy falls under a threshold.
* :class:`SteeringPolicy` - mid-generation steering (Brokman et al., NeurReps 2025): a sampler
  policy that watches the direction (kappa-delta) and magnitude (guidance norm) of the guidance
  gap and, once their combined criterion crosses a threshold, lowers the guidance scale (or
  switches to an adapted embedding) for that sample, leaving ordinary prompts untouched.

A model's condition embedding is ``model.condition_embedding(cond)``: prompt embeddings ``[L, D]``
for a diffusers model, logits over conditions ``[C]`` for a mixture (a soft condition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._checks import check_int, check_positive
from .detect.sampling import StepState, guidance_pair
from .detect.presets import resolve
from .detect.signals import _norm, anisotropy_terms
from .geometry import jvp

__all__ = [
    "condition_embedding",
    "AdaptedEmbedding",
    "adapt_embedding",
    "NoiseOptimization",
    "optimize_noise",
    "SteeringReference",
    "calibrate_steering",
    "SteeringPolicy",
    "METHODS",
    "Generation",
    "generate",
]


def condition_embedding(model, cond) -> torch.Tensor:
    """A differentiable embedding of ``cond`` that the model accepts back as a condition."""
    if hasattr(model, "condition_embedding"):
        return model.condition_embedding(cond).detach().clone()
    if hasattr(model, "embed"):
        return model.embed(cond, 1)[0].detach().clone()
    raise ValueError(f"{type(model).__name__} offers no condition embedding (needs condition_embedding or embed)")


def _objective(model, emb, x_T, name: str, n_steps: int, weights):
    ts = model.timesteps(n_steps)
    if name == "guidance_norm":
        eu, ec = guidance_pair(model, x_T, int(ts[0]), emb)
        return _norm(ec - eu)
    if name == "anisotropy":  # the signal's combination with the raw gap norm
        opts = {"weights": weights, "norm": "raw", "space": "eps"}
        return anisotropy_terms(model, x_T, emb, int(ts[0]), int(ts[-3]), opts)[0]
    raise ValueError(f"objective must be 'guidance_norm' or 'anisotropy', got {name!r}")


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
    *,
    preset: str = "memgeo",
    objective: str = "guidance_norm",
    target: float | None = None,
    relative_target: float | None = None,
    lr: float | None = None,
    max_iters: int | None = None,
    optimizer: str | None = None,
    loss: str | None = None,
    freeze_start_token: bool | None = None,
    n_steps: int = 50,
    weights="auto",
) -> AdaptedEmbedding:
    """Adapt the condition's embedding by gradient descent on a memorization objective at the first timestep.

    Stops when the objective reaches ``target`` (absolute) or ``relative_target`` times its initial
    value, or after ``max_iters`` steps. ``loss="mean"``: the mean over ``x_T``'s seeds of the
    per-sample objective; ``"frobenius"``: one Frobenius norm of the gap over all seeds together.

    memgeo preset: Adam, lr 0.05, at most 30 steps, down to half the initial objective. official
    preset (Wen et al. 2024's released code): AdamW, lr 0.05, 10 steps, absolute target 3 (set on
    SD), the Frobenius loss, and the gradient of the start-of-text token zeroed
    (``freeze_start_token``; prompt embeddings ``[L, D]`` only).
    """
    opts = resolve("adapt_embedding", preset, target=target, relative_target=relative_target, lr=lr,
                   max_iters=max_iters, optimizer=optimizer, loss=loss, freeze_start_token=freeze_start_token)
    max_iters = check_int("max_iters", opts["max_iters"], minimum=0)
    check_positive("lr", opts["lr"])
    if opts["optimizer"] not in ("adam", "adamw") or opts["loss"] not in ("mean", "frobenius"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw' and loss 'mean' or 'frobenius', "
                         f"got {opts['optimizer']!r} and {opts['loss']!r}")
    if opts["loss"] == "frobenius" and objective != "guidance_norm":
        raise ValueError("loss='frobenius' applies to objective='guidance_norm' only")
    emb = condition_embedding(model, cond).requires_grad_(True)
    freeze = bool(opts["freeze_start_token"]) and emb.dim() == 2
    opt = (torch.optim.AdamW if opts["optimizer"] == "adamw" else torch.optim.Adam)([emb], lr=opts["lr"])
    per_iter = 2 if objective == "guidance_norm" else 4
    res = AdaptedEmbedding(emb.detach())
    goal = opts["target"]
    for _ in range(max_iters + 1):
        with torch.enable_grad():
            per_sample = _objective(model, emb, x_T, objective, n_steps, weights)
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


@dataclass
class NoiseOptimization:
    """Result of :func:`optimize_noise`: optimized ``x_T``, per-sample final proxy, acceptance and cost."""

    x_T: torch.Tensor
    proxy: torch.Tensor
    accepted: torch.Tensor
    iterations: int
    n_evals: int
    threshold: float | None = None


def _proxy(model, cond, x, t: int, kind: str):
    sigma = float(model.sigma(t))

    def gap(z):
        eu, ec = guidance_pair(model, z, t, cond)
        return ec - eu

    if kind == "guidance_norm":
        return _norm(gap(x))
    if kind == "sharpness":  # |(H_c - H_u) s_delta| = |J_gap gap| / sigma^2 (Jeon et al.)
        d = gap(x)
        _, Jd = jvp(gap, x, d)
        return _norm(Jd) / sigma**2
    raise ValueError(f"objective must be 'sharpness' or 'guidance_norm', got {kind!r}")


def optimize_noise(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    preset: str = "memgeo",
    objective: str | None = None,
    threshold: float | None = None,
    penalty=None,
    lr: float | None = None,
    max_iters: int | None = None,
    max_rounds: int | None = None,
    n_steps: int = 50,
    generator: torch.Generator | None = None,
) -> NoiseOptimization:
    """Initial-noise optimization (Jeon et al., ICML 2025, SAIL).

    memgeo preset (``objective="sharpness"`` or ``"guidance_norm"``): minimizes
    ``proxy(x) / proxy(x_T) + penalty * ((|x|^2 - |x_T|^2) / d)^2`` per sample by Adam at the first
    timestep: the proxy relative to its initial value (so the penalty's weight does not depend on
    the model's scale), and a penalty that keeps the latent on its initial sphere, i.e. at its
    Gaussian likelihood level. A sample is accepted (and frozen) once its proxy is at most
    ``threshold``.

    official preset (``objective="sail"``, the SAIL loop released with the anisotropy code): see
    :func:`_sail`.
    """
    opts = resolve("optimize_noise", preset, objective=objective, threshold=threshold, penalty=penalty, lr=lr,
                   max_iters=max_iters, max_rounds=max_rounds)
    if opts["objective"] == "sail":
        return _sail(model, cond, x_T, opts, n_steps, generator)
    objective, threshold, penalty, lr = opts["objective"], opts["threshold"], float(opts["penalty"]), opts["lr"]
    max_iters = check_int("max_iters", opts["max_iters"], minimum=0)
    t = int(model.timesteps(n_steps)[0])
    d = math.prod(x_T.shape[1:])
    x = x_T.detach().clone().requires_grad_(True)
    r2 = x_T.detach().flatten(1).pow(2).sum(-1)  # |x_T|^2, kept
    opt = torch.optim.Adam([x], lr=lr)
    per_iter = 2 if objective == "guidance_norm" else 4  # forward (2 or 2 + JVP) and its backward
    n_evals, it = 0, 0
    accepted = torch.zeros(x.shape[0], dtype=torch.bool)
    proxy, proxy0 = None, None
    for it in range(max_iters + 1):
        with torch.enable_grad():
            proxy = _proxy(model, cond, x, t, objective)
            if proxy0 is None:
                proxy0 = proxy.detach().clamp_min(torch.finfo(proxy.dtype).tiny)
            shell = ((x.flatten(1).pow(2).sum(-1) - r2) / d) ** 2
            loss = (proxy / proxy0 + penalty * shell)[~accepted].sum()
        n_evals += per_iter // 2
        if threshold is not None:
            accepted = accepted | (proxy.detach() <= threshold)
        if bool(accepted.all()) or it == max_iters:
            break
        opt.zero_grad()
        loss.backward()
        n_evals += per_iter // 2
        with torch.no_grad():
            x.grad[accepted] = 0.0
        opt.step()
    return NoiseOptimization(x.detach(), proxy.detach(), accepted, it, n_evals)


def _sail(model, cond, x_T: torch.Tensor, opts: dict, n_steps: int, generator) -> NoiseOptimization:
    """The released SAIL loop (Jeon et al. 2025, as released with Asthana & Belagiannis 2026).

    Each round runs Adam (lr 0.05) for at most ``max_iters`` steps on a batch of latents with the
    per-sample loss ``|gap(x + unit(gap(x)))| + lambda |x|`` at the first timestep (lambda 0.05;
    0.01 on v-prediction models, whose released "gap" is the score gap ``-d_eps / sigma_t``), and
    keeps every latent whose loss is at most the threshold (8.2, set on SD v1) as soon as it is.
    Rounds repeat until as many latents as ``x_T`` has rows are kept; after every third failed round
    the threshold rises by 0.1 and the batch restarts from fresh noise. As released, the two rounds
    between restarts start from the same latents, so a latent kept in one is kept again (duplicates
    are reproduced). ``max_rounds`` (30) bounds the loop, which the released code does not; if it
    is reached, the last round's latents fill the missing rows and ``accepted`` says which are kept.
    """
    t = int(model.timesteps(n_steps)[0])
    S = x_T.shape[0]
    v_model = getattr(model, "prediction_type", "epsilon") == "v_prediction"
    lam = opts["penalty"] if opts["penalty"] != "auto" else (0.01 if v_model else 0.05)
    sigma = float(model.sigma(t))
    thres = float(opts["threshold"])
    max_iters = check_int("max_iters", opts["max_iters"], minimum=1)
    max_rounds = check_int("max_rounds", opts["max_rounds"], minimum=1)
    generator = generator or torch.Generator().manual_seed(0)

    def gap(z):
        eu, ec = guidance_pair(model, z, t, cond)
        return -(ec - eu) / sigma if v_model else ec - eu

    def run_round(start, limit):
        """One round from ``start``: the latents it keeps, in order (at most ``limit``), its last loss and latents."""
        lat = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([lat], lr=opts["lr"])
        recorded = torch.zeros(S, dtype=torch.bool)
        got, last, evals = [], None, 0
        for _ in range(max_iters):
            with torch.enable_grad():
                g = gap(lat)
                unit = g / _norm(g).reshape(-1, *([1] * (g.dim() - 1)))
                per_sample = _norm(gap(lat + unit)) + lam * _norm(lat)
            evals += 4
            new = (per_sample.detach() <= thres) & ~recorded
            got += [lat[i].detach().clone() for i in torch.nonzero(new).flatten().tolist()]
            recorded |= new
            last = per_sample.detach()
            if len(got) >= limit:
                break
            opt.zero_grad()
            per_sample.sum().backward()
            evals += 4
            opt.step()
        return got, last, lat, evals

    kept: list[torch.Tensor] = []
    start = x_T.detach().clone()
    lat = start
    n_evals, rounds, last, done = 0, 0, None, None
    while len(kept) < S and rounds < max_rounds:
        if rounds % 3 == 0:  # a new start and threshold: compute the round
            done = run_round(start, S - len(kept))
            n_evals += done[3]
        # the two rounds after it start from the same latents with the same threshold: as released,
        # they keep the same latents again; being deterministic, they are replayed, not recomputed
        got, last, lat, _ = done
        kept += got[: S - len(kept)]
        if len(kept) >= S:
            break
        rounds += 1
        if rounds % 3 == 0:  # every third failure: a higher threshold and fresh noise
            thres += 0.1
            start = torch.randn(x_T.shape, generator=generator, dtype=torch.float64).to(x_T.dtype)
    accepted = torch.arange(S) < len(kept)
    out = torch.stack(kept[:S] + [lat[i].detach() for i in range(len(kept), S)])
    return NoiseOptimization(out, last, accepted, rounds, n_evals // S, thres)


@dataclass
class SteeringReference:
    """Per-step mean and standard deviation of kappa-delta and the guidance norm on ordinary conditions."""

    kappa_mean: torch.Tensor
    kappa_std: torch.Tensor
    norm_mean: torch.Tensor
    norm_std: torch.Tensor

    def criterion(self, step: int, kappa: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """Combined z-score ``z(-kappa) + z(norm)`` at ``step`` (larger = more memorization-like)."""
        zk = (self.kappa_mean[step] - kappa) / self.kappa_std[step].clamp_min(1e-12)
        zn = (norm - self.norm_mean[step]) / self.norm_std[step].clamp_min(1e-12)
        return zk + zn


def calibrate_steering(model, conds, x_T, *, n_steps: int = 50, guidance_scale: float = 7.5,
                       n_directions: int = 4, seed: int = 0, progress: bool = False) -> SteeringReference:
    """Reference statistics per step from ordinary conditions (trajectories with trackers)."""
    from tqdm.auto import tqdm

    from .detect.sampling import ddim_sample
    from .detect.signals import GuidanceNormTracker, KappaDeltaTracker

    if len(conds) == 0:
        raise ValueError("conds must hold at least one ordinary condition to calibrate on (it is empty)")
    ks, ns = [], []
    for i, c in enumerate(tqdm(list(conds), desc="calibrate steering", disable=not progress)):
        res = ddim_sample(model, c, x_T, n_steps=n_steps, guidance_scale=guidance_scale, trackers={
            "kappa_delta": KappaDeltaTracker(n_directions, generator=torch.Generator().manual_seed(seed + i)),
            "guidance_norm": GuidanceNormTracker()})
        ks.append(res.trace["kappa_delta"])
        ns.append(res.trace["guidance_norm"])
    k, n = torch.cat(ks, 1), torch.cat(ns, 1)  # [n_steps, N]
    return SteeringReference(k.mean(1), k.std(1), n.mean(1), n.std(1))


class SteeringPolicy:
    """Mid-generation steering (Brokman et al., NeurReps 2025), a policy for :func:`~memgeo.detect.ddim_sample`.

    Needs the trackers ``"kappa_delta"`` and ``"guidance_norm"`` in the sampler. From step
    ``start_step`` on, a sample whose combined criterion (:meth:`SteeringReference.criterion`),
    averaged over the steps so far (one test on accumulating evidence rather than one per step),
    exceeds ``threshold`` is flagged; from step ``act_from`` on (or its flag, if later) it is
    generated with ``low_guidance`` (action ``"guidance"``; a negative value repels from the
    prompt's conditional prediction) or with the adapted ``embedding`` (action ``"embedding"``,
    the whole batch switches once any sample is flagged). Samples never flagged are left untouched.
    """

    def __init__(self, reference: SteeringReference, *, threshold: float = 3.0, action: str = "guidance",
                 low_guidance: float = 0.0, embedding=None, start_step: int = 0, act_from: int = 0):
        if action not in ("guidance", "embedding"):
            raise ValueError(f"action must be 'guidance' or 'embedding', got {action!r}")
        if action == "embedding" and embedding is None:
            raise ValueError("action='embedding' needs embedding= (an adapted embedding)")
        self.reference, self.threshold, self.action = reference, threshold, action
        self.low_guidance, self.embedding, self.start_step = low_guidance, embedding, start_step
        self.act_from = check_int("act_from", act_from, minimum=0)
        self.flagged: torch.Tensor | None = None
        self.flag_step: torch.Tensor | None = None

    def __call__(self, state: StepState, trace: dict):
        if "kappa_delta" not in trace or "guidance_norm" not in trace:
            raise ValueError("SteeringPolicy needs the sampler trackers 'kappa_delta' and 'guidance_norm'")
        S = state.x.shape[0]
        if self.flagged is None or state.index == 0:
            self.flagged = torch.zeros(S, dtype=torch.bool)
            self.flag_step = torch.full((S,), -1)
            self._sum, self._count = torch.zeros(S, dtype=torch.float64), 0
        if state.index >= self.start_step:
            crit = self.reference.criterion(state.index, trace["kappa_delta"][-1], trace["guidance_norm"][-1])
            self._sum += crit.double().cpu()
            self._count += 1
            new = (self._sum / self._count > self.threshold) & ~self.flagged
            self.flag_step[new] = state.index
            self.flagged |= new
        if not bool(self.flagged.any()) or state.index < self.act_from:
            return None
        if self.action == "embedding":
            return {"cond": self.embedding}
        w = torch.where(self.flagged, torch.tensor(self.low_guidance), torch.tensor(float(state.guidance_scale)))
        return {"guidance_scale": w}


METHODS = ("none", "guidance", "embedding", "noise", "steer")


@dataclass
class Generation:
    """Output of :func:`generate`: final denoised samples, model evaluations per sample, details."""

    samples: torch.Tensor
    n_evals: int
    info: dict = field(default_factory=dict)


def generate(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    method: str = "none",
    strength: float | None = None,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    reference: SteeringReference | None = None,
    n_directions: int = 4,
    seed: int = 0,
    preset: str = "memgeo",
    progress: bool = False,
) -> Generation:
    """Generate with a mitigation method at a strength.

    ``method`` and the meaning of ``strength``:

    * ``"none"``: plain CFG DDIM (strength unused);
    * ``"guidance"``: the baseline of simply lowering the guidance scale to ``strength``;
    * ``"embedding"``: :func:`adapt_embedding` of the guidance norm down to ``strength`` times its
      initial value (default 0.5), then generation with the adapted embedding;
    * ``"noise"``: :func:`optimize_noise` (sharpness proxy) for ``strength`` iterations (default 10);
    * ``"steer"``: :class:`SteeringPolicy` with threshold ``strength`` (default 3; lower steers more);
      flagged samples get the preset's ``low_guidance`` from its ``act_from`` (memgeo: -4 from half
      way; official: 0 from the flag); needs ``reference`` (:func:`calibrate_steering`).

    ``preset`` selects the settings of ``"embedding"``, ``"noise"`` and ``"steer"`` (``"memgeo"`` or
    ``"official"``, see :func:`adapt_embedding`, :func:`optimize_noise` and the ``steer`` table in
    :mod:`memgeo.detect.presets`); a ``strength`` given overrides the relative target, the iteration
    count or the threshold.
    """
    from .detect.sampling import ddim_sample
    from .detect.signals import GuidanceNormTracker, KappaDeltaTracker

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("none", "guidance"):
        w = guidance_scale if method == "none" else float(strength if strength is not None else 1.0)
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=w, progress=progress)
        return Generation(res.denoised, res.n_evals, {"guidance_scale": w})
    if method == "embedding":
        ad = adapt_embedding(model, cond, x_T, preset=preset, n_steps=n_steps,
                             relative_target=None if strength is None else float(strength))
        res = ddim_sample(model, ad.embedding, x_T, n_steps=n_steps, guidance_scale=guidance_scale, progress=progress)
        return Generation(res.denoised, ad.n_evals + res.n_evals, {"losses": ad.losses, "converged": ad.converged})
    if method == "noise":
        iters = int(strength) if strength is not None else (10 if preset == "memgeo" else None)
        opt = optimize_noise(model, cond, x_T, preset=preset, max_iters=iters, n_steps=n_steps)
        res = ddim_sample(model, cond, opt.x_T, n_steps=n_steps, guidance_scale=guidance_scale, progress=progress)
        return Generation(res.denoised, opt.n_evals + res.n_evals, {"proxy": opt.proxy.tolist()})
    if reference is None:
        raise ValueError("method='steer' needs reference= (from calibrate_steering on ordinary conditions)")
    opts = resolve("steer", preset, threshold=None if strength is None else float(strength))
    policy = SteeringPolicy(reference, threshold=float(opts["threshold"]), low_guidance=float(opts["low_guidance"]),
                            act_from=int(round(float(opts["act_from"]) * n_steps)))
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=policy, progress=progress,
                      trackers={
        "kappa_delta": KappaDeltaTracker(n_directions, generator=torch.Generator().manual_seed(seed)),
        "guidance_norm": GuidanceNormTracker()})
    return Generation(res.denoised, res.n_evals, {"flagged": policy.flagged.tolist(), "flag_step": policy.flag_step.tolist(),
                                                   "kappa_delta": res.trace["kappa_delta"], "guidance_norm": res.trace["guidance_norm"]})
