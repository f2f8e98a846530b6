"""Initial-noise optimization (Jeon et al., ICML 2025, SAIL), memgeo's and the released loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_int
from .presets import OptimizeNoiseSettings
from ..guidance import OBJECTIVES, first_timestep, gap_objective, guidance_pair, objective_times, sample_norm

__all__ = ["NoiseOptimization", "optimize_noise"]


@dataclass
class NoiseOptimization:
    """Result of :func:`optimize_noise`: optimized ``x_T``, per-sample final proxy, acceptance and cost."""

    x_T: torch.Tensor
    proxy: torch.Tensor
    accepted: torch.Tensor
    iterations: int
    n_evals: int
    threshold: float | None = None


#: The objectives memgeo's noise optimization descends (:data:`memgeo.guidance.OBJECTIVES`); the official preset's
#: ``"sail"`` is the released loop.
NOISE_OBJECTIVES = ("sharpness", "guidance_norm")


def optimize_noise(
    model,
    cond,
    x_T: torch.Tensor,
    settings: OptimizeNoiseSettings | None = None,
    *,
    preset: str = "memgeo",
    n_steps: int = 50,
    generator: torch.Generator | None = None,
    **options,
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

    The options are the fields of :class:`~memgeo.mitigate.presets.OptimizeNoiseSettings`: ``settings`` (else the
    preset ``preset``), each option given as a keyword replacing its field.
    """
    opts = OptimizeNoiseSettings.resolve(settings, preset, **options).as_options()
    if opts["objective"] == "sail":
        return _sail(model, cond, x_T, opts, n_steps, generator)
    objective, threshold, penalty, lr = opts["objective"], opts["threshold"], float(opts["penalty"]), opts["lr"]
    if objective not in NOISE_OBJECTIVES:
        raise ValueError(f"objective must be 'sail' or one of {NOISE_OBJECTIVES}, got {objective!r}")
    max_iters = check_int("max_iters", opts["max_iters"], minimum=0)
    d = math.prod(x_T.shape[1:])
    x = x_T.detach().clone().requires_grad_(True)
    r2 = x_T.detach().flatten(1).pow(2).sum(-1)  # |x_T|^2, kept
    opt = torch.optim.Adam([x], lr=lr)
    per_iter = OBJECTIVES[objective].evaluations  # forward (2, or 2 + JVP) and its backward
    times = objective_times(model, n_steps)
    n_evals, it = 0, 0
    accepted = torch.zeros(x.shape[0], dtype=torch.bool)
    proxy, proxy0 = None, None
    for it in range(max_iters + 1):
        with torch.enable_grad():
            proxy = gap_objective(model, x, cond, objective, times)
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
    t = first_timestep(model, n_steps)
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
                unit = g / sample_norm(g).reshape(-1, *([1] * (g.dim() - 1)))
                per_sample = sample_norm(gap(lat + unit)) + lam * sample_norm(lat)
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
