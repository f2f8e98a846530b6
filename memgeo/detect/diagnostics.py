"""Which branch drives a trajectory signal: per-step cosines of both predictions on the probe sphere.

kappa-delta reads the guidance gap's direction on a sphere around each step's denoised estimate.
Whether it ranks memorized prompts high or low depends on *which branch* has learned the basin a
sample falls into: the conditional prediction alone (as on Stable Diffusion, where the prompt's
posterior sharpens near a memorized image) or the unconditional one too (as when duplicated images
make up much of a small training set). :func:`branch_diagnostic` records, per step and per
sample, the three cosines with the outward normal and the gap norm, so the two regimes can be told
apart on a user's own model.
"""

from __future__ import annotations

import torch

from .._checks import check_int
from ..sampling import (
    GuidanceNormTracker,
    ProbeCosineTracker,
    ddim_sample,
    initial_noise,
)

__all__ = ["branch_diagnostic", "BRANCH_CURVES"]

#: The curves of :func:`branch_diagnostic`, in order, with what each measures.
BRANCH_CURVES = {
    "cos_c": "cos(eps_c, n): the conditional prediction against the outward normal",
    "cos_u": "cos(eps_u, n): the unconditional prediction against the outward normal",
    "cos_gap": "cos(eps_c - eps_u, n): the guidance gap (kappa-delta is minus this)",
    "gap_norm": "|eps_c - eps_u| at the sampler's own latent (the guidance norm)",
}


def branch_diagnostic(model, conds, *, seeds: int = 4, n_steps: int = 50, guidance_scale: float = 7.5,
                      n_directions: int = 4, seed: int = 0, progress: bool = False, seed_start: int = 0) -> dict:
    r"""Per step, the cosines of :math:`\epsilon_c`, :math:`\epsilon_u` and their gap with the outward normal
    on kappa-delta's sphere (radius :math:`\sigma_t\sqrt d` around :math:`\alpha_t\hat x_0`), and the gap norm.

    Every condition is generated from the same ``seeds`` initial noises (seeds ``seed_start`` on; CFG DDIM at
    ``guidance_scale``), with :class:`~memgeo.detect.ProbeCosineTracker` (``2 n_directions``
    evaluations per step) and the guidance norm. Returns ``{name: [n_steps, len(conds) * seeds]}``
    for each name of :data:`BRANCH_CURVES` (columns condition-major: condition i's seeds are columns
    ``i * seeds ... i * seeds + seeds - 1``), and ``"timesteps"``. No labels are read: group the
    columns by label to compare memorized with ordinary prompts.
    """
    from tqdm.auto import tqdm

    conds = list(conds)
    if not conds:
        raise ValueError("conds must hold at least one condition (it is empty)")
    check_int("n_directions", n_directions)
    x_T = initial_noise(model, list(range(seed_start, seed_start + check_int("seeds", seeds))))
    parts, ts = [], None
    for i, c in enumerate(tqdm(conds, desc="branch diagnostic", disable=not progress)):
        res = ddim_sample(model, c, x_T, n_steps=n_steps, guidance_scale=guidance_scale, trackers={
            "cos": ProbeCosineTracker(n_directions, generator=torch.Generator().manual_seed(seed + i)),
            "gap_norm": GuidanceNormTracker()})
        parts.append((res.trace["cos"], res.trace["gap_norm"]))  # [n_steps, 3, S], [n_steps, S]
        ts = res.timesteps
    cos = torch.cat([p[0] for p in parts], dim=2)
    out = {name: cos[:, k] for k, name in enumerate(("cos_c", "cos_u", "cos_gap"))}
    out["gap_norm"] = torch.cat([p[1] for p in parts], dim=1)
    out["timesteps"] = ts
    return out
