"""Guidance outside the attraction basin (Jain et al., CVPR 2025): classifier-free guidance applied while the
trajectory is inside a memorized image's attraction basin causes the copy; delaying it until the trajectory leaves the
basin, or guiding away from the prompt meanwhile ("opposite guidance"), mitigates at no extra evaluation."""

from __future__ import annotations

import torch

from ..guidance import sample_norm
from ..sampling import StepState
from .presets import BasinSettings

__all__ = ["BasinPolicy", "basin_exit"]


def basin_exit(norms: torch.Tensor) -> torch.Tensor:
    r"""Per sample, the first step ``j`` at which the guidance-gap norms ``d`` ``[steps, S]`` show a strict local
    minimum behind them, :math:`d_{j-2} > d_{j-1} < d_j` (the released ``generate_test_dataset_dtp.py`` rule: full
    guidance from step ``j`` on); ``steps`` (one past the last) where there is none."""
    d = torch.as_tensor(norms)
    n = d.shape[0]
    out = torch.full(d.shape[1:], n, dtype=torch.long)
    if n >= 3:
        found = (d[:-2] > d[1:-1]) & (d[2:] > d[1:-1])  # found[j - 2]: a minimum at j - 1, seen at step j
        j = torch.arange(2, n).reshape(-1, *([1] * (d.dim() - 1))).expand_as(found)
        out = torch.where(found.any(0), torch.where(found, j, n).min(0).values, out)
    return out


class BasinPolicy:
    """A :func:`~memgeo.sampling.ddim_sample` policy: guidance ``inside`` until each sample leaves the attraction
    basin, the sampler's ``guidance_scale`` from then on.

    The exit is found from the guidance gap the sampler computes at every step anyway, ``|eps_c - eps_u|`` per sample
    (the L2 norm over the latent): the first strict local minimum of its trajectory (:func:`basin_exit`), so the
    policy costs no evaluation. ``force_at`` (a fraction of the steps, or None): a sample that shows no minimum by
    then gets full guidance from there (the released rule has no such bound; a sample whose gap never turns would
    be generated without guidance at all).

    Presets (``mitigate.presets.PRESETS["basin"]``): official, the released dynamic rule, ``inside = 1`` (the
    conditional prediction alone) and no bound; memgeo, opposite guidance ``inside = -2`` (the released README's
    static opposite-guidance setting) with the same exit, forced by half way.
    """

    def __init__(self, n_steps: int, *, preset: str = "memgeo", settings: BasinSettings | None = None,
                 inside: float | None = None, force_at: float | None = None):
        opts = BasinSettings.resolve(settings, preset, inside=inside, force_at=force_at).as_options()
        self.inside = float(opts["inside"])
        f = opts["force_at"]
        if f is not None and not 0.0 < float(f) <= 1.0:
            raise ValueError(f"force_at must be a fraction of the steps in (0, 1] or None, got {f!r}")
        self.force_step = n_steps if f is None else int(round(float(f) * n_steps))
        self.norms: list[torch.Tensor] = []
        self.exit_step: torch.Tensor | None = None

    def __call__(self, state: StepState, trace: dict) -> dict:
        self.norms.append(sample_norm(state.eps_c - state.eps_u))
        out = basin_exit(torch.stack(self.norms))
        step = torch.clamp(out, max=self.force_step)
        self.exit_step = step
        outside = step <= state.index
        w = torch.where(outside, torch.as_tensor(state.guidance_scale, dtype=state.x.dtype),
                        torch.as_tensor(self.inside, dtype=state.x.dtype))
        return {"guidance_scale": w}
