"""Cross-attention probabilities of a diffusers UNet, captured during one evaluation of the score model.

Bright-ending detection (Chen et al., ICLR 2025) and the cross-attention localization baseline both read
the attention of one prompt token (the end token) at the last sampler step; they differ in which layers
they keep. Written once here, below detection and explanation.
"""

from __future__ import annotations

import torch

__all__ = ["AttentionCapture", "token_attention", "end_token_rows", "has_cross_attention", "require_cross_attention"]


class AttentionCapture:
    """An attention processor that keeps the head-averaged cross-attention probabilities ``[B, N, L]`` of its
    layer and then runs the default processor."""

    def __init__(self, store: dict, name: str):
        from diffusers.models.attention_processor import AttnProcessor

        self.store, self.name, self.inner = store, name, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None and hidden_states.dim() == 3:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(q, k, None)  # [B * heads, N, L]
            B = hidden_states.shape[0]
            self.store[self.name] = probs.reshape(B, attn.heads, *probs.shape[1:]).mean(1).detach()
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def has_cross_attention(model) -> bool:
    """Whether ``model`` is a diffusers UNet model with cross-attention layers (SD v1/v2, SDXL, the testbed)."""
    unet = getattr(model, "unet", None)
    spec = getattr(model, "spec", None)  # a loaded model's family says whether its denoiser has UNet cross-attention
    return (unet is not None and hasattr(unet, "attn_processors") and getattr(spec, "cross_attention", True)
            and any("attn2" in name for name in unet.attn_processors))


def require_cross_attention(model, what: str) -> None:
    """A clear error where ``model`` has no UNet cross-attention (``what`` names the tool that needs it)."""
    if not has_cross_attention(model):
        raise ValueError(f"{type(model).__name__} exposes no diffusers UNet cross-attention (a UNet with attn2 layers; "
                         f"SD3's transformer attends jointly over text and image): {what} needs one")


def end_token_rows(model, cond, batch: int) -> torch.Tensor:
    """The row of the end-of-prompt token in the prompt embedding, per sample ``[batch]`` (``cond``: a prompt or a
    list of one prompt per row)."""
    prompts = [cond] * batch if isinstance(cond, str) else list(cond)
    if len(prompts) != batch or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"cond must be a prompt or a list of {batch} prompts (the end token is read from the text)")
    rows = []
    for p in prompts:
        ids = model.prompt_ids(p).tolist()  # a clear error where the model has no tokenizer
        eos = model.tokenizer.eos_token_id
        rows.append(ids.index(eos, 1) if eos in ids[1:] else len(ids) - 1)
    return torch.tensor(rows)


def token_attention(model, cond, x: torch.Tensor, t, rows: torch.Tensor, what: str = "the attention map") -> dict:
    """``{layer name: [S, N]}``: every cross-attention layer's head-averaged attention to token ``rows[s]`` (per sample)
    in one conditional evaluation ``model.eps(x, t, cond)`` (one UNet evaluation per sample); ``N`` is the layer's
    number of spatial positions."""
    require_cross_attention(model, what)
    unet = model.unet
    store: dict = {}
    saved = unet.attn_processors
    try:
        unet.set_attn_processor({name: AttentionCapture(store, name) for name in saved})
        model.eps(x, t, cond)
    finally:
        unet.set_attn_processor(saved)
    if not store:
        raise ValueError("the UNet ran no cross-attention layer")
    idx = rows.to(torch.long).reshape(-1, 1, 1)
    return {name: p.gather(-1, idx.expand(p.shape[0], p.shape[1], 1).to(p.device))[..., 0] for name, p in store.items()}
