"""Stable Diffusion v1.x (epsilon) and v2.x (v-prediction): ``StableDiffusionPipeline``. The condition is the text
encoder's last hidden state; ``unet(x, t, encoder_hidden_states=states)``. Every default of :class:`FamilySpec` is
this family's."""

from __future__ import annotations

from ..sizes import SD_V1_UNET_CONFIG
from .base import FamilySpec

__all__ = ["SD"]


class StableDiffusion(FamilySpec):
    name = "sd"
    pipeline = "StableDiffusionPipeline"
    real_size = ("UNet2DConditionModel", SD_V1_UNET_CONFIG, (4, 64, 64))
    in_fingerprint = False


SD = StableDiffusion()
