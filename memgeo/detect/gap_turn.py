"""Gap turn (memgeo): how far the guidance gap turns over the first sampler steps, weighted by its length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int
from .._util import Settings, option
from ..sampling import ddim_sample
from .common import SignalResult

__all__ = ["GapTurnSettings", "gap_turn", "gap_turns", "GapTracker"]


@dataclass(frozen=True)
class GapTurnSettings(Settings):
    """memgeo's own detector (no released code): the first ``k`` turns of the guidance gap."""

    k: int = option(1, "the turns read: between the gaps of sampler steps i and i + 1 for i < k (k + 1 steps, "
                       "2 (k + 1) evaluations)", type=int)


class GapTracker:
    """A :func:`~memgeo.sampling.ddim_sample` tracker: the guidance gap ``eps_c - eps_u`` of every sample, flattened
    ``[S, d]``, at each step (computed by the step anyway)."""

    def __call__(self, model, state) -> torch.Tensor:
        return (state.eps_c - state.eps_u).flatten(1)


def gap_turns(gaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From consecutive gaps ``[steps, S, d]``: their norms ``[steps, S]``, the cosines of consecutive gaps
    ``[steps - 1, S]`` and the turns ``|g_i| (1 - cos(g_i, g_{i+1}))`` ``[steps - 1, S]``."""
    norms = gaps.norm(dim=2)
    cos = torch.nn.functional.cosine_similarity(gaps[:-1], gaps[1:], dim=2)
    return norms, cos, norms[:-1] * (1 - cos)


def gap_turn(model, cond, x_T: torch.Tensor, settings: GapTurnSettings | None = None, *, preset: str = "memgeo",
             n_steps: int = 50, guidance_scale: float = 7.5, **options) -> SignalResult:
    r"""The guidance gap's turn over the first ``k`` sampler steps, weighted by its length:
    :math:`\frac1k\sum_{i<k} \|g_i\| (1 - \cos\angle(g_i, g_{i+1}))`, where :math:`g_i = \epsilon_c - \epsilon_u` at
    sampler step ``i`` of the classifier-free-guided DDIM generation from ``x_T``. ``k = 1`` reads the gap at
    ``x_T`` and after one step: 4 evaluations, the first two of which the generation's own first step computes anyway.

    The direction-only reading of the trajectory (kappa-delta's idea, Brokman et al.) at the smallest budget: a
    memorized prompt's gap is long at ``x_T`` and turns once the first guided step moves the sample towards its
    copy; an ordinary prompt's gap keeps its direction. ``\|g_i\| (1 - \cos)`` is the length of ``g_i`` lost along
    the next gap's direction, :math:`\|g_i\| - g_i \cdot \hat g_{i+1}`. Where it was designed (the earlier embedded
    SD-regime testbed, sd-ladder-shared) and where it does not hold (the small-data testbed): benchmarks/results/cheap_geometry/.

    ``extras``: ``"norms"`` ``[k + 1, S]`` and ``"cosines"`` ``[k, S]`` of the consecutive gaps (on a run of fewer
    than ``k + 1`` steps, every turn it has).
    """
    s = GapTurnSettings.resolve(settings, preset, **options)
    k = check_int("k", s.k)
    if check_int("n_steps", n_steps) < 2:
        raise ValueError(f"the gap turn needs n_steps >= 2 (two gaps), got {n_steps}")
    k = min(k, n_steps - 1)  # a shorter run: every turn it has, as the other budget readings
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, stop_after=k + 1,
                      trackers={"gap": GapTracker()})
    norms, cos, turns = gap_turns(res.trace["gap"].double())  # of the k + 1 gaps
    v = turns.mean(0)
    v = v.to(x_T.dtype)
    return SignalResult("gap_turn", v, v, res.n_evals, extras={"norms": norms, "cosines": cos})
