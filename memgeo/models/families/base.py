"""What every model family shares: the spec a family fills in, the prompt conditioning it builds on, the packed
condition layout, and the folder-level facts read before the family is known (``model_index.json``, distillation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

__all__ = ["FamilySpec", "TextConditioning", "pack_condition", "unpack_condition", "distillation_notes", "read_index",
           "DISTILLATION_MARKERS", "DISTILLED_NAMES"]

#: Where a checkpoint's configs say it is distilled (few-step or guidance-embedded), signals read a gap that its
#: usual generation never uses: (component, config key, values that say so, what it means).
DISTILLATION_MARKERS = (
    ("unet", "time_cond_proj_dim", None, "the UNet takes the guidance scale as an input (LCM-style guidance "
                                         "distillation)"),
    ("transformer", "guidance_embeds", (True,), "the transformer takes the guidance scale as an input (guidance "
                                                "distillation)"),
    ("scheduler", "_class_name", ("LCMScheduler", "TCDScheduler"), "its scheduler is a few-step consistency "
                                                                   "scheduler (timestep distillation)"),
)

#: Words in a checkpoint's name that mark a distilled release (SDXL-Turbo, SD3.5 Large Turbo, SDXL-Lightning, LCM, ...).
DISTILLED_NAMES = ("turbo", "lightning", "lcm", "hyper-sd", "schnell")


def distillation_notes(configs: dict, names: list[str]) -> list[str]:
    """What says a checkpoint is distilled: ``configs`` maps a component (``"unet"``, ``"transformer"``,
    ``"scheduler"``) to its config dict, ``names`` are its folder or hub id and recorded names. Empty where
    nothing does."""
    notes = []
    for component, key, values, meaning in DISTILLATION_MARKERS:
        value = (configs.get(component) or {}).get(key)
        if value is not None and (values is None or value in values):
            notes.append(f"{meaning} ({component} {key} = {value!r})")
    hits = sorted({w for n in names for w in DISTILLED_NAMES if w in str(n).lower()})
    if hits:
        notes.append(f"its name says {', '.join(hits)} (a distilled release)")
    return notes


def read_index(path: str, local: Path, kwargs: dict) -> dict:
    """``model_index.json`` of a folder or cached hub id (``{}`` where there is none: an SD v1/v2 layout)."""
    if local.is_dir():
        f = local / "model_index.json"
        return json.loads(f.read_text()) if f.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "model_index.json", local_files_only=kwargs.get("local_files_only", True))).read_text())
    except Exception:  # noqa: BLE001 - no index: the components' own loaders say what is missing
        return {}


def pack_condition(states: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    """``[B, L, D]`` token states and ``[B, P]`` pooled embeddings -> ``[B, L + ceil(P / D), D]``."""
    if pooled is None:
        return states
    B, _, D = states.shape
    rows = math.ceil(pooled.shape[-1] / D)
    padded = torch.nn.functional.pad(pooled, (0, rows * D - pooled.shape[-1]))
    return torch.cat([states, padded.reshape(B, rows, D).to(states.dtype)], dim=1)


def unpack_condition(emb: torch.Tensor, n_tokens: int, pooled_dim: int | None):
    """The inverse of :func:`pack_condition`: ``(states [B, L, D], pooled [B, P] or None)``."""
    if pooled_dim is None:
        return emb, None
    return emb[:, :n_tokens], emb[:, n_tokens:].flatten(1)[:, :pooled_dim]


class TextConditioning:
    """Prompt token ids -> the packed condition a family's denoiser reads. This base is one CLIP text encoder's
    last hidden state (Stable Diffusion v1/v2); families with more encoders override :meth:`encode_ids` and the
    layout properties."""

    def __init__(self, tokenizers: list, encoders: list, *, joint_dim: int | None = None, force_zeros: bool = False,
                 t5_length: int = 256):
        self.tokenizers = tokenizers  # CLIP tokenizers (one vocabulary), then T5's where present
        self.encoders = encoders  # aligned with tokenizers; SD3's T5 may be None
        self.joint_dim = joint_dim
        self.force_zeros = force_zeros
        self.t5_length = t5_length

    @property
    def clip_encoders(self) -> list:
        """The CLIP encoders, which read the first tokenizer's ids (token-level gradients flow through these)."""
        return self.encoders[:1]

    @property
    def n_tokens(self) -> int:
        """Token rows of the condition (before the pooled rows)."""
        return self.tokenizers[0].model_max_length

    @property
    def pooled_dim(self) -> int | None:
        """Width of the pooled embedding laid out after the token rows (None: there is none)."""
        return None

    def ids(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizers[0]
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    @property
    def device(self) -> torch.device:
        return next(self.encoders[0].parameters()).device

    def encode_ids(self, ids: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        """``[B, L]`` ids of the first tokenizer -> the packed condition ``[B, L', D]`` (``texts``: the prompts
        themselves, for encoders that read raw text)."""
        return self.encoders[0](ids.to(self.device))[0]

    def unconditional(self) -> torch.Tensor:
        """The unconditional condition ``[L', D]``: the empty prompt's, or zeros (SDXL's ``force_zeros_for_empty_prompt``)."""
        with torch.no_grad():
            emb = self.encode_ids(self.ids([""]), [""])[0]
        return torch.zeros_like(emb) if self.force_zeros else emb


class TwoClipConditioning(TextConditioning):
    """Two CLIP encoders of one vocabulary side by side (penultimate hidden states), as SDXL and SD3 read them."""

    @property
    def clip_encoders(self) -> list:
        return self.encoders[:2]

    @staticmethod
    def _repad(ids: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
        """Ids of one CLIP tokenizer in the padding convention of another (same vocabulary): after each
        row's first end token every position becomes ``pad``."""
        out = ids.clone()
        for row in out:
            hits = (row == eos).nonzero()
            if len(hits):
                row[int(hits[0]) + 1:] = pad
        return out

    def clip_outputs(self, ids: torch.Tensor) -> list:
        eos = self.tokenizers[0].eos_token_id
        return [enc(self._repad(ids.to(self.device), eos, tok.pad_token_id), output_hidden_states=True)
                for tok, enc in zip(self.tokenizers[:2], self.encoders[:2])]


class FamilySpec:
    """One model family: how it loads a diffusers folder, builds the prompt condition, calls its denoiser, reads its
    noise schedule and loads a LoRA. A new family is one subclass in its own module, listed in
    ``memgeo.models.families.SPECS``.

    Attributes:
        name: memgeo's name of the family (``model.family``).
        pipeline: the diffusers pipeline class of its folders (``model_index.json``'s ``_class_name``).
        denoiser: the denoiser's subfolder (``"unet"`` or ``"transformer"``).
        cross_attention: whether its denoiser has UNet cross-attention layers (``attn2``) that token tools read.
        in_fingerprint: whether its name enters a model's fingerprint (False for the first family, so that results
            stored before families existed keep their fingerprints).
        real_size: ``(denoiser class, its configuration, latent shape)`` of its released model, for cost planning
            at the real scale (:func:`memgeo.models.architectures.denoiser_parameters`); empty where not given.
    """

    name: str = ""
    pipeline: str = ""
    denoiser: str = "unet"
    cross_attention: bool = True
    in_fingerprint: bool = True
    real_size: tuple = ()

    # -------------------------------------------------------------- loading
    def load_network(self, path: str, weights: dict):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(path, subfolder="unet", **weights)

    def load_text(self, path: str, index: dict, weights: dict, kwargs: dict) -> tuple[list, list]:
        """``(tokenizers, encoders)`` of the folder."""
        from transformers import CLIPTextModel, CLIPTokenizer

        return ([CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kwargs)],
                [CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **weights)])

    def load_components(self, path: str, index: dict, weights_dtype: torch.dtype, kwargs: dict) -> dict:
        """The denoiser, scheduler config, tokenizers and text encoders of a folder (no VAE)."""
        from diffusers import DDIMScheduler

        weights = dict(use_safetensors=True, torch_dtype=weights_dtype, **kwargs)
        scheduler = dict(DDIMScheduler.load_config(path, subfolder="scheduler", **kwargs))  # the config only
        network = self.load_network(path, weights)
        tokenizers, encoders = self.load_text(path, index, weights, kwargs)
        return {"network": network, "scheduler": scheduler, "tokenizers": tokenizers, "encoders": encoders}

    def lora_pipeline(self, parts: dict):
        """The family's own diffusers pipeline around the loaded components, whose ``load_lora_weights`` reads an
        adapter."""
        import diffusers

        tok, enc = parts["tokenizers"], parts["encoders"]
        # a placeholder scheduler with current keys (the pipeline prints a deprecation warning for older ones)
        scheduler = diffusers.DDIMScheduler(steps_offset=1, clip_sample=False)
        return diffusers.StableDiffusionPipeline(vae=None, text_encoder=enc[0], tokenizer=tok[0], unet=parts["network"],
                                                 scheduler=scheduler, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)

    # -------------------------------------------------------------- conditioning, schedule, network
    def conditioning(self, tokenizers: list, encoders: list, network_config, index: dict) -> TextConditioning:
        return TextConditioning(tokenizers, encoders)

    def prediction_type(self, scheduler_config: dict) -> str:
        return scheduler_config.get("prediction_type", "epsilon")

    def schedule(self, scheduler_config: dict, network_config):
        """The noise schedule it was trained with: VP from the scheduler config's betas."""
        from ...gmm.schedules import NoiseSchedule

        return NoiseSchedule.from_diffusers_config(scheduler_config)

    def time_ids(self, image_size: tuple[int, int]) -> torch.Tensor | None:
        """Added time ids of an image of ``image_size`` pixels (None: the family has none)."""
        return None

    def call(self, network, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, conditioning,
             time_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's raw output for latents ``x`` at timesteps ``t`` ``[B]`` and packed conditions ``emb``."""
        return network(x, t, encoder_hidden_states=emb).sample

    def __repr__(self) -> str:
        return f"<model family {self.name!r}: {self.pipeline}>"
