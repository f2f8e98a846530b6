"""Stable Diffusion v1.4's architecture with random weights, built offline from its configuration.

For speed and memory planning at the real scale without downloading weights: the UNet has SD
v1.4's configuration (860M parameters; 4x64x64 latents at ``sample_size=64``) and the text encoder
ViT-L/14's text configuration (123M parameters). Only the weights differ from the released model,
and no timing depends on them. The tokenizer is memgeo's byte-level one (any prompt tokenizes).
"""

from __future__ import annotations

import tempfile

import torch

from .sizes import SD3_MEDIUM_TRANSFORMER_CONFIG, SD_V1_UNET_CONFIG, SDXL_UNET_CONFIG, VIT_L14_TEXT_CONFIG

__all__ = ["SD_V1_UNET_CONFIG", "VIT_L14_TEXT_CONFIG", "SDXL_UNET_CONFIG", "SD3_MEDIUM_TRANSFORMER_CONFIG",
           "family_sizes", "denoiser_parameters", "sd_v1_random_model"]


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
