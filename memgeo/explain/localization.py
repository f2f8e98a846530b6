"""Localization: a per-pixel memorization map from the variance collapse of the conditional field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .._checks import check_int
from ..parameterization import eps_to_x0
from ..sampling import ddim_sample, initial_noise

__all__ = ["image_map", "default_localization_step", "Localization", "smooth", "localize", "pixel_map", "pixel_auroc", "last_guided_state"]


def image_map(model, latent_map: torch.Tensor) -> torch.Tensor:
    """A per-coordinate map ``[C, h, w]`` of the latent in image layout.

    A model whose latents are images says so with ``to_image`` (the testbed: its space-to-depth
    fold, one latent coordinate per pixel, ``[2h, 2w]`` for 4 channels). Otherwise the VAE layout:
    the channel mean, each latent position repeated over the ``f x f`` pixels it decodes to (``f``
    is the model's ``vae_scale_factor``, 8 when it has none)."""
    if latent_map.dim() != 3:
        raise ValueError(f"latent_map must have shape [C, h, w], got {tuple(latent_map.shape)}")
    to_image = getattr(model, "to_image", None)
    if to_image is not None:
        return to_image(latent_map)
    f = int(getattr(model, "vae_scale_factor", 8))
    m = latent_map.float().mean(0)
    return m.repeat_interleave(f, 0).repeat_interleave(f, 1)


def default_localization_step(model, n_steps: int) -> int:
    """The first DDIM step at which the signal-to-noise ratio ``alpha_t^2 / sigma_t^2`` reaches 1.

    Before it, ``x_t`` is mostly noise and every denoised estimate is still the prompt's mean
    image; after it, the estimates of every region commit to one image, memorized or not. At
    SNR 1 the posterior covariance ``Cov[x0 | x_t]`` is halfway between the prior's and zero, so
    a region that the prompt pins to one training image already stands out from the rest."""
    ts = model.timesteps(n_steps)
    snr = [float(model.alpha(t)) ** 2 / float(model.sigma(t)) ** 2 for t in ts.tolist()]
    return next((i for i, v in enumerate(snr) if v >= 1.0), len(ts) - 1)


@dataclass
class Localization:
    """Output of :func:`localize`.

    Attributes:
        map: the memorization map in image layout ``[H, W]`` (larger = more collapsed).
        latent_map: the per-coordinate map ``[C, h, w]`` at the chosen step (before smoothing).
        step, t: the DDIM step index and timestep of ``map``.
        per_step: the latent map at every step ``[n_steps, C, h, w]``.
        samples: the generated latents ``[S, C, h, w]`` (final denoised estimates).
        x_last: the guided generation's ``x_t`` at its last step (the input of that UNet call;
            :func:`cross_attention_map` takes it to skip generating again).
        settings: seeds, steps, guidance scale.
    """

    map: torch.Tensor
    latent_map: torch.Tensor
    step: int
    t: int
    per_step: torch.Tensor
    samples: torch.Tensor
    x_last: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)


class _VarianceTracker:
    """Records, per step, the across-seed variance of the conditional denoised estimate, and the
    last state's ``x`` (no model evaluations)."""

    evals_per_step = 0

    def __init__(self):
        self.var = []
        self.x = None

    def __call__(self, model, state) -> torch.Tensor:
        self.var.append(eps_to_x0(state.eps_c, state.x, state.alpha, state.sigma).var(0).detach().cpu())
        self.x = state.x
        return torch.zeros(state.x.shape[0])


def smooth(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of a ``[H, W]`` map (standard deviation ``sigma`` pixels, edges replicated)."""
    if sigma <= 0:
        return image
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = k / k.sum()
    im = torch.nn.functional.pad(image.float()[None, None], (r, r, r, r), mode="replicate")
    im = torch.nn.functional.conv2d(im, k.reshape(1, 1, 1, -1))
    return torch.nn.functional.conv2d(im, k.reshape(1, 1, -1, 1))[0, 0]


def localize(
    model,
    prompt,
    *,
    seeds=8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    step: int | None = None,
    progress: bool = False,
) -> Localization:
    """Where in the image ``prompt`` is memorized: ``log var_u - log var_c`` per latent coordinate,
    the across-seed variances of the denoised estimate along the unconditional generation and the
    prompt's guided generation from the same ``seeds``, at ``step`` (default
    :func:`default_localization_step`); mapped to pixels by :func:`image_map` and smoothed by a
    Gaussian of one latent position's width. Costs two generations per seed (4 evaluations a step)."""
    n_steps = check_int("n_steps", n_steps)
    x_T = initial_noise(model, seeds)
    if x_T.shape[0] < 2:
        raise ValueError("seeds must name at least 2 seeds: the map compares variances across seeds")
    step = default_localization_step(model, n_steps) if step is None else check_int("step", step, minimum=0)
    if step >= n_steps:
        raise ValueError(f"step must lie in [0, n_steps) = [0, {n_steps}), got {step}")
    cond, ref = _VarianceTracker(), _VarianceTracker()
    res = ddim_sample(model, prompt, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                      trackers={"variance": cond}, progress=progress)
    ddim_sample(model, None, x_T, n_steps=n_steps, guidance_scale=1.0, trackers={"variance": ref}, progress=progress)
    tiny = torch.finfo(x_T.dtype).tiny
    per_step = torch.stack(ref.var).clamp_min(tiny).log() - torch.stack(cond.var).clamp_min(tiny).log()
    return Localization(pixel_map(model, per_step[step]), per_step[step], step, int(res.timesteps[step]), per_step,
                        res.denoised, cond.x,
                        {"seeds": int(x_T.shape[0]), "n_steps": n_steps, "guidance_scale": guidance_scale})


def pixel_map(model, latent_map: torch.Tensor) -> torch.Tensor:
    """:func:`image_map`, smoothed by a Gaussian whose width is one latent position in pixels."""
    img = image_map(model, latent_map)
    return smooth(img, img.shape[-1] / latent_map.shape[-1])


def last_guided_state(model, prompt, x_T, n_steps: int, guidance_scale: float, progress: bool = False) -> torch.Tensor:
    """``x_t`` at the last DDIM step (the input of its UNet call)."""
    keep = {}

    def grab(state, trace):
        if state.index == n_steps - 1:
            keep["x"] = state.x
        return None

    ddim_sample(model, prompt, x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=grab, progress=progress)
    return keep["x"]


def pixel_auroc(score_map: torch.Tensor, mask) -> float:
    """AUROC of a per-pixel map against a 0/1 mask of the same shape (the memorized region)."""
    from sklearn.metrics import roc_auc_score

    m = torch.as_tensor(mask).reshape(-1)
    s = torch.as_tensor(score_map).reshape(-1)
    if m.shape != s.shape:
        raise ValueError(f"mask must have the map's shape {tuple(score_map.shape)}, got {tuple(torch.as_tensor(mask).shape)}")
    if m.min() == m.max():
        raise ValueError("mask must mark some pixels and leave some unmarked")
    return float(roc_auc_score(m.numpy(), s.double().numpy()))
