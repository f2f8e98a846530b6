"""kappa-delta (Brokman et al., NeurReps 2025): the guidance gap's direction tracked along generation."""

from __future__ import annotations

import math

import torch

from .._checks import check_int
from ..guidance import guidance_pair, timestep_value
from ..sampling import (
    GuidanceNormTracker,
    LatentRecorder,
    ddim_sample,
    repeat_cond,
    trajectory_trackers,
)
from .common import SignalResult, mean_cosine_on_sphere
from .settings import KappaDeltaSettings

__all__ = ["kappa_delta", "kappa_delta_released"]


def kappa_delta(
    model,
    cond,
    x_T: torch.Tensor,
    settings: KappaDeltaSettings | None = None,
    *,
    preset: str = "memgeo",
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    **options,
) -> SignalResult:
    r"""kappa-delta tracked along generation (Brokman et al., NeurReps 2025).

    memgeo preset (``geometry="memgeo"``): DDIM with :class:`~memgeo.sampling.KappaDeltaTracker` at
    every step (4 directions): the mean cosine of the gap field with the outward normal on a sphere
    of radius :math:`\sigma_t\sqrt d` around :math:`\alpha_t\hat x_0` at each step's own timestep.
    The signal is the plain mean of the per-step values over the first ``track_steps`` steps (all by
    default), each step weighted alike, or the value at ``step``. Memorized prompts pull
    trajectories into a basin where the gap field converges: ``score = -value``.

    official preset (``geometry="official"``): :func:`kappa_delta_released`, the released code's
    probes; ``step`` is then a released step index.

    ``extras``: ``"trace"`` ``[probes, S]`` (every step for memgeo, the probed ones for official),
    ``"trace_t"`` the timestep each row probed at, ``"trace_step"`` the sampler step each row read,
    and the guidance norm at every sampler step (``"guidance_norm_trace"``).

    The options are the fields of :class:`~memgeo.detect.settings.KappaDeltaSettings`: ``settings`` (else the
    preset ``preset``), each option given as a keyword replacing its field.
    """
    s = KappaDeltaSettings.resolve(settings, preset, **options)
    n_dir = check_int("n_directions", s.n_directions, minimum=1)
    n_steps = check_int("n_steps", n_steps)
    if s.geometry == "official":
        return kappa_delta_released(model, cond, x_T, s, n_steps=n_steps, guidance_scale=guidance_scale,
                                    generator=generator)
    if s.geometry != "memgeo":
        raise ValueError(f"geometry must be 'memgeo' or 'official', got {s.geometry!r}")
    stop = (None if s.step is not None or s.track_steps is None  # the first k steps: all of a shorter run
            else min(check_int("track_steps", s.track_steps, minimum=1), n_steps))
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, stop_after=stop,
                      trackers=trajectory_trackers(n_dir, generator=generator))  # stopped where it is read
    trace = res.trace["kappa_delta"]
    if s.step is not None:
        i = check_int("step", s.step, minimum=0)
        if i >= n_steps:
            raise ValueError(f"step must be < n_steps = {n_steps}, got {i}")
        v = trace[i]
    else:
        k = stop if stop is not None else n_steps
        v = trace[:k].mean(0)
    return SignalResult("kappa_delta", -v, v, res.n_evals,
                        extras={"trace": trace, "trace_t": [timestep_value(t) for t in res.timesteps], "trace_step": list(range(n_steps)),
                                "guidance_norm_trace": res.trace["guidance_norm"], "x0": res.denoised})


def kappa_delta_released(model, cond, x_T: torch.Tensor, settings: KappaDeltaSettings | None = None, *,
                         n_steps: int = 50, guidance_scale: float = 7.5, generator: torch.Generator | None = None,
                         **options) -> SignalResult:
    r"""kappa-delta as the released code computes it (``preset="official"`` of :func:`kappa_delta`).

    The released run (500 steps of SD v1.4's PNDM scheduler) saves the latent after steps
    ``probe_steps`` = 1, 50, 100, ..., 500 and probes each with the step *index* i passed as the
    timestep: the mean cosine :math:`\frac1n\sum_j \cos(\Delta\epsilon(c + r n_j), n_j)` of the raw
    gap field with 16 directions, centre :math:`c = \sqrt{\bar\alpha_i}\,x_{after\ i}`, radius
    :math:`\sqrt{1-\bar\alpha_i}\sqrt d`. An ``n_steps``-step DDIM run stands in for the 500-step run:
    released step i is read at the same fraction of the generation, the latent after step
    ``round((i + 1) n / (released_steps + 1)) - 1`` (both samplers integrate the same probability-flow
    ODE; the probe times t = i are the released ones whatever ``n_steps``). The decode/re-encode
    through the VAE is skipped on a VAE-free model. No average over steps: the value is the one at
    released step ``step`` (500, the finished latent); every probed step is in ``extras["trace"]``.
    The gap points out of a basin, so ``score = value``. ``settings`` defaults to the official preset; its
    ``n_directions``, ``step``, ``probe_steps`` and ``released_steps`` are read (and each keyword option given).
    """
    s = KappaDeltaSettings.resolve(settings, "official", **options)
    n_dir = check_int("n_directions", s.n_directions, minimum=1)
    n_steps = check_int("n_steps", n_steps)
    step, released_steps = s.step, s.released_steps
    trace_t = [int(i) for i in s.probe_steps]
    if step not in trace_t:
        raise ValueError(f"step must be one of the released probe steps {trace_t}, got {step}")
    rec = LatentRecorder()
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                      trackers={"latent": rec, "guidance_norm": GuidanceNormTracker()})
    after = rec.latents[1:] + [res.x0]  # the latent after step j
    rows = [min(max(round((i + 1) * n_steps / (released_steps + 1)) - 1, 0), n_steps - 1) for i in trace_t]
    d = math.prod(x_T.shape[1:])
    S = x_T.shape[0]
    values = []
    with torch.no_grad():
        for t, j in zip(trace_t, rows):  # t: the released step index, passed as a timestep

            def gap(z, t=t):
                eps_u, eps_c = guidance_pair(model, z, t, repeat_cond(cond, z.shape[0] // S, S))
                return eps_c - eps_u

            centre = float(model.alpha(t)) * after[j]
            values.append(mean_cosine_on_sphere(gap, centre, float(model.sigma(t)) * math.sqrt(d), n_dir, 1.0, generator)[0])
    trace = torch.stack(values)
    v = trace[trace_t.index(step)]
    return SignalResult("kappa_delta", v, v, res.n_evals + 2 * n_dir * len(trace_t),
                        extras={"trace": trace, "trace_t": trace_t, "trace_step": rows,
                                "guidance_norm_trace": res.trace["guidance_norm"], "x0": res.denoised})
