"""SD v1.4's architecture, built offline from its configuration, has the released model's sizes."""

import torch


def test_configs_build_the_released_parameter_counts():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from memgeo.models.architectures import SD_V1_UNET_CONFIG, VIT_L14_TEXT_CONFIG

    with torch.device("meta"):  # no memory: only shapes
        unet = UNet2DConditionModel(**SD_V1_UNET_CONFIG)
        text = CLIPTextModel(CLIPTextConfig(**VIT_L14_TEXT_CONFIG))
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # CompVis/stable-diffusion-v1-4 unet
    assert sum(p.numel() for p in text.parameters()) == 123_060_480  # openai/clip-vit-large-patch14 text model


def test_sdxl_and_sd3_configs_build_the_released_sizes():
    from memgeo.models.architectures import denoiser_parameters

    assert denoiser_parameters("sdxl") == 2_567_463_684  # stabilityai/stable-diffusion-xl-base-1.0 unet
    assert denoiser_parameters("sd3") == 2_028_328_000  # stabilityai/stable-diffusion-3-medium-diffusers transformer
