"""Stable Diffusion v1.4's architecture with random weights, built offline from its configuration.

For speed and memory planning at the real scale without downloading weights: the UNet has SD
v1.4's configuration (860M parameters; 4x64x64 latents at ``sample_size=64``) and the text encoder
ViT-L/14's text configuration (123M parameters). Only the weights differ from the released model,
and no timing depends on them. The tokenizer is memgeo's byte-level one (any prompt tokenizes).
"""

from __future__ import annotations

import tempfile

import torch

__all__ = ["SD_V1_UNET_CONFIG", "VIT_L14_TEXT_CONFIG", "SDXL_UNET_CONFIG", "SD3_MEDIUM_TRANSFORMER_CONFIG",
           "family_sizes", "denoiser_parameters", "sd_v1_random_model"]

SD_V1_UNET_CONFIG = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

VIT_L14_TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)


#: SDXL base 1.0's UNet (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json): 4x128x128 latents.
SDXL_UNET_CONFIG = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=(1, 2, 10), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)

#: Stable Diffusion 3 Medium's MMDiT (stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json):
#: 16x128x128 latents, patch 2.
SD3_MEDIUM_TRANSFORMER_CONFIG = dict(
    attention_head_dim=64, caption_projection_dim=1536, in_channels=16, joint_attention_dim=4096, num_attention_heads=24,
    num_layers=24, out_channels=16, patch_size=2, pooled_projection_dim=2048, pos_embed_max_size=192, sample_size=128,
)

def family_sizes() -> dict:
    """Family -> (denoiser class, its configuration, latent shape): each family's real size, for cost planning (its
    spec's ``real_size``, :data:`memgeo.models.families.SPECS`)."""
    from .families import SPECS

    return {name: spec.real_size for name, spec in SPECS.items() if spec.real_size}


def denoiser_parameters(family: str) -> int:
    """The parameter count of a family's denoiser at its real size, built on the meta device (no memory)."""
    import diffusers

    sizes = family_sizes()
    if family not in sizes:
        raise ValueError(f"family must be one of {sorted(sizes)}, got {family!r}")
    cls, config, _ = sizes[family]
    with torch.device("meta"):
        net = getattr(diffusers, cls)(**config)
    return sum(p.numel() for p in net.parameters())


def sd_v1_random_model(*, sample_size: int = 64, device: str | torch.device = "cpu",
                       weights_dtype: torch.dtype = torch.float32, seed: int = 0):
    """A :class:`~memgeo.models.DiffusersScoreModel` with SD v1.4's UNet and ViT-L/14's text encoder, random weights.

    ``sample_size`` is the latent side (64 for 512-pixel images; smaller for CPU runs); the
    scheduler is SD's (DDIM, scaled-linear betas, epsilon prediction).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..gmm.schedules import NoiseSchedule
    from .adapter import DiffusersScoreModel
    from .tiny import build_tokenizer, float32_default, sd_scheduler

    with float32_default():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**SD_V1_UNET_CONFIG, "sample_size": sample_size})
        text_encoder = CLIPTextModel(CLIPTextConfig(**VIT_L14_TEXT_CONFIG))
    for module in (unet, text_encoder):
        module.to(device).eval().requires_grad_(False)
        if weights_dtype != torch.float32:
            module.to(dtype=weights_dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)

    @torch.no_grad()
    def encode(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(list(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids.to(device))[0]

    model = DiffusersScoreModel(unet, NoiseSchedule.from_diffusers_config(sd_scheduler("epsilon").config), encode,
                                prediction_type="epsilon", event_shape=(4, sample_size, sample_size), device=device)
    model.tokenizer, model.text_encoder, model.text_encoders = tokenizer, text_encoder, [text_encoder]  # token tools work
    return model
