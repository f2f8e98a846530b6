"""A fine-tune's networks: its base testbed, frozen, with fresh LoRA adapters (peft)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.tiny import float32_default

__all__: list[str] = []


def _base_name(base) -> str:
    """How ``testbed.json`` names a fine-tune's base: ``"embedded"`` for the shipped testbed, else its path."""
    from .folder import TESTBED_DIR

    return "embedded" if Path(base).resolve() == TESTBED_DIR.resolve() else str(Path(base).resolve())


def _lora_components(base, lora: dict, seed: int):
    """The base testbed's networks and tokenizer, frozen, in float32 whatever precision the base is stored in (the
    protocol's models are stored in half precision), with fresh LoRA adapters on the UNet (peft)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    with float32_default():
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", use_safetensors=True,
                                                    torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", use_safetensors=True,
                                                     torch_dtype=torch.float32)
        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        torch.manual_seed(seed)  # the adapters' initial weights
        unet.add_adapter(LoraConfig(r=lora["rank"], lora_alpha=lora["rank"], init_lora_weights="gaussian",
                                    target_modules=list(lora["targets"])))
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    arch = json.loads((Path(base) / "testbed.json").read_text())["architecture"]
    return unet, text_encoder, tokenizer, {**arch, "lora_rank": lora["rank"], "lora_targets": list(lora["targets"])}
