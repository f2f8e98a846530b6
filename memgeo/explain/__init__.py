"""Explain memorization: which tokens trigger it, and where in the image it sits.

* :func:`token_attribution` - per-token attribution of a memorization signal (Wen et al., ICLR
  2024): the norm of the signal's gradient with respect to each token's input embedding (through
  the text encoder) or its row of the prompt embedding (the text encoder's output, as Wen et al.'s
  released code), and, as the exact reference, the drop of the signal when the token is left out
  of the prompt and the prompt is encoded again.
* :func:`localize` - a per-pixel memorization map from the coordinate-wise variance collapse of
  the conditional field against the unconditional one: at each step, the log-ratio of the
  across-seed variances of the denoised estimate ``x0_hat`` per latent coordinate, along the
  unconditional model's own generation and along the prompt's guided generation. Where the
  prompt pins a region to one training image, the conditional estimates of that region agree
  across seeds while the unconditional ones still spread; regions that every image shares (a
  constant background) collapse in both and cancel. The variance of ``x0_hat`` across
  trajectories tracks the posterior covariance, ``Cov[x0 | x_t] = sigma_t^2 / alpha_t^2 (I +
  sigma_t^2 H)`` (Tweedie), so the map is the per-position curvature of log p_t, conditional
  against unconditional. It is smoothed by a Gaussian of one latent position's width: a pixel
  alone cannot tell a copied stroke from a background pixel that every image shares.
* :func:`cross_attention_map` - the baseline in the spirit of bright-ending attention (Chen et al.,
  ICLR 2025): the cross-attention of the end-of-prompt token at the last denoising step, averaged
  over heads, layers and seeds.

Maps are returned in latent layout ``[h, w]`` (channel-averaged) and in image layout through
:func:`image_map`: the testbed's space-to-depth fold (exact, one latent coordinate per pixel), or
Stable Diffusion's VAE layout (each latent position covers ``f x f`` pixels).
"""

from .attention import cross_attention_map
from .attribution import TokenAttribution, token_attribution
from .localization import (
    Localization,
    default_localization_step,
    image_map,
    localize,
    pixel_auroc,
    pixel_map,
    smooth,
)

__all__ = [
    "TokenAttribution", "token_attribution", "Localization", "localize", "cross_attention_map", "image_map", "pixel_map",
    "smooth", "default_localization_step", "pixel_auroc",
]
