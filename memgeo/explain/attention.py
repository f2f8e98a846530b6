"""Cross-attention capture: the end-token attention map of bright-ending attention (Chen et al., ICLR 2025)."""

from __future__ import annotations

import math

import torch

from .._checks import check_int
from ..models.attention import end_token_rows, require_cross_attention, token_attention
from ..guidance import timestep_value
from ..sampling import initial_noise
from .localization import image_map, last_guided_state

__all__ = ["cross_attention_map"]


def cross_attention_map(model, prompt: str, *, seeds=8, n_steps: int = 50, guidance_scale: float = 7.5,
                        token: str | int = "end", x_last: torch.Tensor | None = None,
                        progress: bool = False) -> torch.Tensor:
    """The cross-attention baseline: attention of one prompt token (``"end"``: the end-of-prompt
    token, as bright-ending attention; or a row index) at the last DDIM step, averaged over heads,
    every cross-attention layer (each resized to the latent grid) and seeds; in image layout
    (:func:`image_map`). Needs a diffusers UNet (``model.unet`` with attention processors).
    ``x_last``: the generation's state at its last step when already known (``Localization.x_last``
    of the same prompt, seeds, steps and guidance); otherwise the generation is run here."""
    require_cross_attention(model, "the cross-attention map")
    n_steps = check_int("n_steps", n_steps)
    if x_last is None:
        x_last = last_guided_state(model, prompt, initial_noise(model, seeds), n_steps, guidance_scale, progress)
    S = x_last.shape[0]
    rows = end_token_rows(model, prompt, S) if token == "end" else torch.full((S,), check_int("token", token, minimum=0))
    t_last = timestep_value(model.timesteps(n_steps)[-1])
    store = list(token_attention(model, prompt, x_last, t_last, rows, "the cross-attention map").values())
    h, w = model.event_shape[-2:]
    maps = []
    for p in store:  # [S, N]
        side = int(round(math.sqrt(p.shape[-1] * h / w)))
        grid = p.reshape(p.shape[0], 1, side, p.shape[-1] // side).float()
        maps.append(torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False))
    if not maps:
        raise ValueError("the UNet ran no cross-attention layer")
    m = torch.stack(maps).mean((0, 1))[0]  # [h, w]
    return image_map(model, m.expand(model.event_shape[0], h, w))
