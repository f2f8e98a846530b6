"""Cross-attention capture: the end-token attention map of bright-ending attention (Chen et al., ICLR 2025)."""

from __future__ import annotations

import math

import torch

from .._checks import check_int
from ..sampling import initial_noise
from .localization import image_map, last_guided_state

__all__ = ["cross_attention_map"]


class _AttentionCapture:
    """An attention processor that keeps the cross-attention probabilities and then runs the default one."""

    def __init__(self, store: list, token: int):
        from diffusers.models.attention_processor import AttnProcessor

        self.store, self.token, self.inner = store, token, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None and hidden_states.dim() == 3:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(q, k, None)  # [B * heads, N, L]
            B = hidden_states.shape[0]
            self.store.append(probs.reshape(B, attn.heads, *probs.shape[1:])[..., self.token].mean(1).detach())
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def cross_attention_map(model, prompt: str, *, seeds=8, n_steps: int = 50, guidance_scale: float = 7.5,
                        token: str | int = "end", x_last: torch.Tensor | None = None,
                        progress: bool = False) -> torch.Tensor:
    """The cross-attention baseline: attention of one prompt token (``"end"``: the end-of-prompt
    token, as bright-ending attention; or a row index) at the last DDIM step, averaged over heads,
    every cross-attention layer (each resized to the latent grid) and seeds; in image layout
    (:func:`image_map`). Needs a diffusers UNet (``model.unet`` with attention processors).
    ``x_last``: the generation's state at its last step when already known (``Localization.x_last``
    of the same prompt, seeds, steps and guidance); otherwise the generation is run here."""
    unet = getattr(model, "unet", None)
    if unet is None or not hasattr(unet, "attn_processors") or getattr(model, "family", "sd") == "sd3":
        raise ValueError(f"{type(model).__name__} exposes no diffusers UNet cross-attention (a UNet with attn2 layers; "
                         "SD3's transformer attends jointly over text and image): the cross-attention map needs one")
    if token == "end":
        ids = model.prompt_ids(prompt).tolist()
        eos = model.tokenizer.eos_token_id
        row = ids.index(eos, 1) if eos in ids[1:] else len(ids) - 1
    else:
        row = check_int("token", token, minimum=0)
    n_steps = check_int("n_steps", n_steps)
    if x_last is None:
        x_last = last_guided_state(model, prompt, initial_noise(model, seeds), n_steps, guidance_scale, progress)
    t_last = int(model.timesteps(n_steps)[-1])
    store: list = []
    saved = unet.attn_processors
    try:
        unet.set_attn_processor(_AttentionCapture(store, row))
        model.eps(x_last, t_last, prompt)
    finally:
        unet.set_attn_processor(saved)
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
