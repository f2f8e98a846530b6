"""SDXL: ``StableDiffusionXLPipeline``. Both CLIP encoders' penultimate hidden states side by side, the second
encoder's projected pooled output laid out after them, and the added time ids ``(H, W, 0, 0, H, W)`` of the default
image size, as the pipeline builds them; the unconditional condition is all zeros where the folder sets
``force_zeros_for_empty_prompt`` (SDXL base), else the empty prompt's."""

from __future__ import annotations

import torch

from ..sizes import SDXL_UNET_CONFIG
from .base import FamilySpec, TwoClipConditioning, pack_condition, unpack_condition

__all__ = ["SDXL"]


class SDXLConditioning(TwoClipConditioning):
    @property
    def pooled_dim(self) -> int:
        return self.encoders[1].config.projection_dim

    def encode_ids(self, ids: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        outs = self.clip_outputs(ids)
        clip = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        return pack_condition(clip, outs[1][0])  # the second encoder's projection (the first has none)


class StableDiffusionXL(FamilySpec):
    name = "sdxl"
    pipeline = "StableDiffusionXLPipeline"
    real_size = ("UNet2DConditionModel", SDXL_UNET_CONFIG, (4, 128, 128))

    def load_text(self, path, index, weights, kwargs):
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        tokenizers, encoders = super().load_text(path, index, weights, kwargs)
        encoders.append(CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", **weights))
        tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kwargs))
        return tokenizers, encoders

    def lora_pipeline(self, parts):
        import diffusers

        tok, enc = parts["tokenizers"], parts["encoders"]
        return diffusers.StableDiffusionXLPipeline(vae=None, text_encoder=enc[0], text_encoder_2=enc[1],
                                                   tokenizer=tok[0], tokenizer_2=tok[1], unet=parts["network"],
                                                   scheduler=diffusers.DDIMScheduler())

    def conditioning(self, tokenizers, encoders, network_config, index):
        return SDXLConditioning(tokenizers, encoders, force_zeros=bool(index.get("force_zeros_for_empty_prompt", False)))

    def time_ids(self, image_size):
        h, w = image_size  # original size, crop corner, target size: the default image size, no crop
        return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)

    def call(self, network, x, t, emb, conditioning, time_ids=None):
        states, pooled = unpack_condition(emb, conditioning.n_tokens, conditioning.pooled_dim)
        ids = time_ids.to(x.device, x.dtype).expand(x.shape[0], -1)
        return network(x, t, encoder_hidden_states=states, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample


SDXL = StableDiffusionXL()
