"""Stable Diffusion v1.x (epsilon) and v2.x (v-prediction): ``StableDiffusionPipeline``. The condition is the text
encoder's last hidden state; ``unet(x, t, encoder_hidden_states=states)``. Every default of :class:`FamilySpec` is
this family's."""

from __future__ import annotations

from .base import FamilySpec

__all__ = ["SD"]


class StableDiffusion(FamilySpec):
    name = "sd"
    pipeline = "StableDiffusionPipeline"
    in_fingerprint = False


SD = StableDiffusion()
