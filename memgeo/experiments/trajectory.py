"""Trajectory tracking: kappa-delta and the guidance norm at every step, and their per-step AUROC."""

from __future__ import annotations

import numpy as np
import torch

from ..detect import auroc
from ..guidance import combined_score
from ..sampling import ddim_sample, initial_noise, trajectory_trackers

__all__ = ["trajectory_traces", "per_step_auroc", "trajectory_auroc"]


def trajectory_traces(model, conds, labels, *, seeds: int, n_steps: int, guidance_scale: float, n_directions: int = 4,
                      progress: bool = False, seed_start: int = 0):
    """kappa-delta and guidance norm at every DDIM step, ``[n_steps, N]`` each, and the labels ``[N]``.

    ``N = len(conds) * seeds``: every condition is generated from the same ``seeds`` initial noises (seeds
    ``seed_start`` on).
    """
    if len(conds) == 0:
        raise ValueError("conds must hold at least one condition (it is empty)")
    if len(conds) != len(labels):
        raise ValueError(f"conds and labels must have the same length, got {len(conds)} and {len(labels)}")
    from tqdm.auto import tqdm

    x_T = initial_noise(model, list(range(seed_start, seed_start + seeds)))
    kap, mag, y = [], [], []
    for i, (c, lab) in enumerate(tqdm(list(zip(conds, labels)), desc="trajectories", disable=not progress)):
        res = ddim_sample(model, c, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers=trajectory_trackers(n_directions, generator=torch.Generator().manual_seed(i)))
        kap.append(res.trace["kappa_delta"])
        mag.append(res.trace["guidance_norm"])
        y += [lab] * seeds
    return torch.cat(kap, 1), torch.cat(mag, 1), np.array(y)


def per_step_auroc(kap: torch.Tensor, mag: torch.Tensor, y) -> dict[str, np.ndarray]:
    """Per-step AUROC of direction-only (kappa-delta), magnitude-only (guidance norm) and combined
    detectors, from :func:`trajectory_traces`."""
    y = np.asarray(y)
    neg = torch.as_tensor(y == 0)
    curves = {"direction (kappa-delta)": [], "magnitude (guidance norm)": [], "combined": []}
    for s in range(kap.shape[0]):
        comb = combined_score(kap[s], mag[s], reference=(kap[s][neg], mag[s][neg]))
        curves["direction (kappa-delta)"].append(auroc(y, (-kap[s]).numpy()))
        curves["magnitude (guidance norm)"].append(auroc(y, mag[s].numpy()))
        curves["combined"].append(auroc(y, comb.numpy()))
    return {k: np.array(v) for k, v in curves.items()}


def trajectory_auroc(model, conds, labels, *, seeds: int, n_steps: int, guidance_scale: float, n_directions: int = 4,
                     progress: bool = False, seed_start: int = 0):
    """Per-step AUROC of direction-only (kappa-delta), magnitude-only (guidance norm) and combined detectors."""
    kap, mag, y = trajectory_traces(model, conds, labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                                    n_directions=n_directions, progress=progress, seed_start=seed_start)
    return per_step_auroc(kap, mag, y)
