"""A trained run saved for use: the networks (or a fine-tune's LoRA adapter) in the Stable Diffusion layout, and
``testbed.json`` with its data, prompts and training settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .._util import atomic_write_text

__all__: list[str] = []


@dataclass
class _Run:
    """What a training run is: its data, tokenizer, schedule and architecture, and its settings (recorded in
    ``testbed.json`` and checked on resume)."""

    data: object
    tokenizer: object
    schedule: object
    arch: dict
    steps: int
    batch_size: int
    lr: float
    lr_decay_steps: int
    dropout: float
    dropout_duplicated: float
    mitigate_threshold: float | None
    seed: int
    base: str | None = None
    precision: str = "float32"
    base_fingerprint: str | None = None
    ema_decay: float | None = None
    compact: bool = False
    resumed_at: list = None
    mitigate_rule: str | None = None


def _save_evaluated(folder: Path, unet, text_encoder, run: _Run, *, ema, step: int, loss: float, mitigation=None):
    """The evaluated model in ``folder``: the networks' averages ``ema`` where the run averages (stored in half
    precision where ``run.compact``), else the networks as trained."""
    if ema is None and not run.compact:
        _save_model(folder, unet, text_encoder, run, step=step, loss=loss, mitigation=mitigation)
        return
    import copy

    nets = [copy.deepcopy(unet), copy.deepcopy(text_encoder)]
    for net, name in zip(nets, ("unet", "text_encoder")):
        if ema is not None:
            net.load_state_dict(ema[name])
        if run.compact:
            net.half()
    _save_model(folder, *nets, run, step=step, loss=loss, mitigation=mitigation)


def _save_model(folder: Path, unet, text_encoder, run: _Run, *, step: int, loss: float, mitigation=None) -> None:
    """The trained networks in the Stable Diffusion layout (a fine-tune: its LoRA adapter in diffusers' format), with
    ``testbed.json`` (data settings, prompts, training settings) written last."""
    unet.eval()
    text_encoder.eval()
    if run.base is not None:
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        folder.mkdir(parents=True, exist_ok=True)
        layers = {k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
        _write_testbed_json(folder, run, step=step, loss=loss, mitigation=mitigation)
        return
    unet.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    unet.to(memory_format=torch.channels_last)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    run.tokenizer.save_pretrained(folder / "tokenizer")
    run.schedule.save_pretrained(folder / "scheduler")
    atomic_write_text(folder / "model_index.json", json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "vae": [None, None], "safety_checker": [None, None], "feature_extractor": [None, None],
    }, indent=2))
    _write_testbed_json(folder, run, step=step, loss=loss, mitigation=mitigation)


def _write_testbed_json(folder: Path, run: _Run, *, step: int, loss: float, mitigation=None) -> None:
    data, arch, base, dropout, dropout_duplicated = run.data, run.arch, run.base, run.dropout, run.dropout_duplicated
    atomic_write_text(folder / "testbed.json", json.dumps({
        "format": "memgeo-testbed", "version": 2,
        **({"base": base, "base_fingerprint": run.base_fingerprint} if base is not None else {}),
        "data": {"builder": "canvas", **data.settings},
        "prompts": data.prompts, "n_training_items": len(data.items), "n_training_images": len(data.images),
        "steps": step, "final_loss": loss, "batch_size": run.batch_size, "lr": run.lr,
        **({"lr_decay_steps": run.lr_decay_steps} if run.lr_decay_steps else {}), "dropout": dropout,
        **({"dropout_duplicated": dropout_duplicated} if dropout_duplicated != dropout else {}),
        **({"precision": run.precision} if run.precision != "float32" else {}),
        **({"ema_decay": run.ema_decay, "evaluated_weights": "ema"} if run.ema_decay else {}),
        **({"stored_dtype": "float16"} if run.compact else {}),
        **({"resumed_at": run.resumed_at} if run.resumed_at else {}),
        "seed": run.seed, "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
        **({"mitigation": mitigation} if mitigation else {}),
    }, indent=1))
