"""Update norm ("Broken Memories", Huang et al., KDD 2026): how far the sampler's own steps move the latents."""

from __future__ import annotations

import torch

from .._checks import check_int
from ..sampling import ddim_sample
from .common import SignalResult
from .presets import resolve

__all__ = ["update_norm"]


def update_norm(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", k: int | None = None, n_steps: int = 50,
                guidance_scale: float = 7.5) -> SignalResult:
    r"""The mean norm of the guided sampler's first ``k`` latent updates, :math:`\frac1k\sum_{i<k}\|x_{t_{i+1}} -
    x_{t_i}\|` (Huang et al., KDD 2026, "Broken Memories": memorized prompts move the latents further in the first
    steps; their SD v1.4 AUC is 0.998 from the first 3 steps). No code was released: the norm is the L2 over the whole
    latent of the classifier-free-guided DDIM update, averaged over the first ``k`` steps (both presets ``k = 3``,
    the paper's "first 3 steps"); docs/conventions.md says what is and is not known.

    The updates are those of the generation itself (:attr:`~memgeo.sampling.SampleResult.update_norms`), so where a
    generation runs anyway the signal costs no evaluation (``extras["extra_evals"] = 0``); called alone it runs the
    first ``k`` steps, ``2 k`` evaluations, which ``n_evals`` counts.
    """
    opts = resolve("update_norm", preset, k=k)
    k = check_int("k", opts["k"])
    if k > n_steps:
        raise ValueError(f"k must be at most n_steps={n_steps}, got {k}")
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, stop_after=k)
    v = res.update_norms[:k].mean(0)
    return SignalResult("update_norm", v, v, res.n_evals, extras={"trace": res.update_norms, "extra_evals": 0})
