"""Guidance norm (Wen et al., ICLR 2024): the size of the guidance gap."""

from __future__ import annotations

import torch

from .._checks import check_int
from ..guidance import guidance_pair, raw_prediction, sample_norm
from ..sampling import GuidanceNormTracker, ddim_sample
from .common import SignalResult, first_timestep
from .presets import resolve

__all__ = ["guidance_norm"]


def guidance_norm(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", steps: str | None = None,
                  space: str | None = None, t: int | None = None, n_steps: int = 50,
                  guidance_scale: float = 7.5, track_steps: int | None = None) -> SignalResult:
    r"""Guidance norm (Wen et al., ICLR 2024): :math:`\|\epsilon_c - \epsilon_u\|`.

    ``steps="first"`` (memgeo preset): at ``x_T`` and the first timestep (or ``t``), two
    evaluations per sample. ``steps="all"`` (official preset, as the released code): the mean of
    the norm over every step of the CFG DDIM generation at ``guidance_scale``, ``2 n_steps``
    evaluations; the per-step curve is in ``extras["trace"]`` (the tracker :class:`GuidanceNormTracker`).
    ``space``: the gap of eps predictions (``"eps"``) or of the model's raw outputs
    (``"prediction"``, as released: on v-prediction models :math:`|v_c - v_u| = |\Delta\epsilon|/\alpha_t`).
    ``track_steps`` (with ``steps="all"``): the mean over the first that many steps only, the sampler stopped
    there (``2 track_steps`` evaluations): a budget reading.
    """
    opts = resolve("guidance_norm", preset, steps=steps, space=space)
    if opts["space"] not in ("eps", "prediction"):
        raise ValueError(f"space must be 'eps' or 'prediction', got {opts['space']!r}")
    if opts["steps"] == "all":
        stop = None if track_steps is None else min(check_int("track_steps", track_steps), n_steps)  # all of a short run
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, stop_after=stop,
                          trackers={"guidance_norm": GuidanceNormTracker(space=opts["space"])})
        trace = res.trace["guidance_norm"]
        v = trace.mean(0)
        return SignalResult("guidance_norm", v, v, res.n_evals, extras={"trace": trace})
    if opts["steps"] != "first":
        raise ValueError(f"steps must be 'first' or 'all', got {opts['steps']!r}")
    t = first_timestep(model, t, n_steps)
    with torch.no_grad():
        eps_u, eps_c = guidance_pair(model, x_T, t, cond)
    if opts["space"] == "prediction":
        eps_u, eps_c = raw_prediction(model, eps_u, x_T, t), raw_prediction(model, eps_c, x_T, t)
    v = sample_norm(eps_c - eps_u)
    return SignalResult("guidance_norm", v, v, 2, extras={"t": t})
