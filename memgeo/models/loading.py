"""Loading a diffusers folder or hub id into a :class:`~memgeo.models.adapter.DiffusersScoreModel`
(:meth:`~memgeo.models.adapter.DiffusersScoreModel.from_pretrained`): the source checked, the family's components
read, a LoRA adapter loaded through the family pipeline's own loader, and the prompt encoder built."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from .._util import file_sha256
from . import families

__all__ = ["load_pretrained"]


def load_pretrained(cls, path_or_id, *, weights_dtype: torch.dtype, dtype: torch.dtype, device, allow_download: bool,
                    variant: str | None, lora):
    """The body of :meth:`DiffusersScoreModel.from_pretrained` (``cls``), whose docstring says what it does."""
    path = str(path_or_id)
    local = _check_source(path, allow_download)
    lora_file = _lora_file(lora) if lora is not None else None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    kwargs = dict(local_files_only=(not allow_download) or offline)
    if variant is not None:
        kwargs["variant"] = variant
    index = families.read_index(path, local, kwargs)
    spec = families.model_family(index, path)
    try:
        parts = spec.load_components(path, index, weights_dtype, kwargs)
    except OSError as err:
        raise OSError(
            f"could not load the model {path!r} from local files (safetensors weights of the denoiser and text "
            f"encoders; scheduler and tokenizer configs); nothing is downloaded unless allow_download=True and "
            f"HF_HUB_OFFLINE is unset. Cause: {err}"
        ) from err
    network, scheduler_config, tokenizers, encoders = parts["network"], parts["scheduler"], parts["tokenizers"], parts["encoders"]
    _warn_if_distilled(path, index, spec, network, scheduler_config)
    for tok in tokenizers[:2]:
        if tok.model_max_length > 1024:
            tok.model_max_length = 77
    if lora_file is not None:
        _load_lora(spec, parts, lora_file)
    for module in [network, *encoders]:
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    cfg = network.config
    conditioning = spec.conditioning(tokenizers, encoders, cfg, index)
    tokenizer = tokenizers[0]
    encode = _prompt_encoder(tokenizer, conditioning)
    size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size, cfg.sample_size)
    model = cls(
        network, spec.schedule(scheduler_config, cfg), encode, prediction_type=spec.prediction_type(scheduler_config),
        event_shape=(cfg.in_channels, *size), dtype=dtype, device=device,
    )
    model.spec = spec
    model.conditioning = conditioning
    model.name = path if lora_file is None else f"{path}+{lora_file.name}"
    model.folder = local.resolve() if local.is_dir() else None
    vae = local / "vae" / "config.json"
    if vae.is_file():  # pixels per latent position along each side: 2^(VAE levels - 1)
        model.vae_scale_factor = 2 ** (len(json.loads(vae.read_text()).get("block_out_channels", [0] * 4)) - 1)
    model.time_ids = spec.time_ids(tuple(n * model.vae_scale_factor for n in size))
    model._modules_to_fingerprint = tuple(m for m in (network, *encoders) if m is not None)
    model._tokenizer_size = len(tokenizer)
    model.lora = lora_file
    model._lora_digest = file_sha256(lora_file) if lora_file is not None else None
    model.tokenizer, model.text_encoder = tokenizer, encoders[0]
    model.text_encoders = conditioning.clip_encoders
    return model


def _check_source(path: str, allow_download: bool) -> Path:
    """The local folder ``path`` names (checked to hold a denoiser), or a hub id that may be read: refused before
    any loading where it cannot be."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir() or not ((local / "unet").is_dir() or (local / "transformer").is_dir()):
            raise FileNotFoundError(f"model folder {path!r} has no unet/ or transformer/ subfolder "
                                    "(expected a diffusers pipeline layout)")
    elif not allow_download or offline:
        looks_local = path.startswith((".", "/", "~")) or os.sep in path.strip("/").split("/", 1)[-1] or path.count("/") != 1
        if looks_local:
            raise FileNotFoundError(f"model folder {path!r} does not exist")
    return local


def _warn_if_distilled(path: str, index: dict, spec, network, scheduler_config) -> None:
    """Warn once where the model looks guidance- or step-distilled (its generation reads no CFG gap)."""
    notes = families.distillation_notes(
        {spec.denoiser: dict(network.config), "scheduler": scheduler_config},
        [Path(path).name, index.get("_name_or_path", ""), getattr(network.config, "_name_or_path", "")])
    if notes:
        warnings.warn(f"model {path!r} looks distilled: {'; '.join(notes)}. Its usual few-step or guidance-embedded "
                      "generation does not use the classifier-free guidance gap that memgeo's signals read, so "
                      "published thresholds and results for SD v1/v2 do not carry over to it", stacklevel=4)


def _prompt_encoder(tokenizer, conditioning):
    """``encode(prompts) -> condition tensor``, warning about a prompt longer than the text encoder keeps."""

    @torch.no_grad()
    def encode(prompts: list[str]) -> torch.Tensor:
        limit = tokenizer.model_max_length
        for p in prompts:
            n = len(tokenizer.tokenize(p)) + 2  # with the start and end tokens
            if n > limit:
                short = p if len(p) <= 60 else p[:57] + "..."
                warnings.warn(f"prompt {short!r} is {n} tokens long; the text encoder keeps the first {limit} "
                              f"(start and end tokens included) and cuts the rest", stacklevel=3)
        return conditioning.encode_ids(conditioning.ids(prompts), list(prompts))

    return encode


def _lora_file(lora) -> Path:
    """The adapter's safetensors file: ``lora`` itself, or the one ``.safetensors`` file in the folder ``lora``."""
    p = Path(lora).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise ValueError(f"lora folder {str(lora)!r} must hold exactly one .safetensors file, found {len(found)}")
        return found[0]
    if not p.is_file() or p.suffix != ".safetensors":
        raise ValueError(f"lora must be a .safetensors file or a folder holding one, got {str(lora)!r}")
    return p


def _load_lora(spec, parts: dict, lora_file: Path) -> None:
    """Load a LoRA adapter into the components through the family pipeline's own loader (diffusers + peft)."""
    pipe = spec.lora_pipeline(parts)
    modules = [m for m in (parts["network"], *parts["encoders"]) if m is not None]

    def n_lora():
        return sum("lora_" in name for m in modules for name, _ in m.named_parameters())

    before = n_lora()
    try:
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"lora {str(lora_file)!r} does not fit this {spec.name} model: {err}") from err
    if n_lora() == before:  # diffusers skips keys that name no layer of this model
        raise ValueError(f"lora {str(lora_file)!r} does not fit this {spec.name} model: none of its weights names a "
                         "layer of the denoiser or text encoders (an adapter trained for another family?)")
