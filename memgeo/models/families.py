r"""Model families behind one score-model interface: Stable Diffusion v1/v2, SDXL and Stable Diffusion 3.

A family says three things about a diffusers folder: how prompt token ids become the condition the
denoiser reads, how the denoiser is called, and which noise schedule it was trained with. Everything
else (signals, sampler, mitigation, explanation) sees only ``eps(x, t, cond)`` and friends.

The condition is one tensor per prompt, ``[L', D]``: the text encoders' token rows, then (SDXL, SD3) the
pooled embedding laid out in the rows after them, zero-padded to whole rows of width ``D``. So a
prompt embedding is still one tensor that mitigation can adapt and token tools can read row by row
(row ``i + 1`` is token ``i``), and the family unpacks it before each call.

* ``sd`` (``StableDiffusionPipeline``): the text encoder's last hidden state; ``unet(x, t, states)``.
* ``sdxl`` (``StableDiffusionXLPipeline``): both CLIP encoders' penultimate hidden states side by side,
  the second encoder's projected pooled output, and the added time ids ``(H, W, 0, 0, H, W)`` of the
  default image size, as the pipeline builds them; the unconditional condition is all zeros where the
  folder sets ``force_zeros_for_empty_prompt`` (SDXL base), else the empty prompt's.
* ``sd3`` (``StableDiffusion3Pipeline``): CLIP-L and CLIP-G penultimate states side by side, zero-padded
  to the T5 width, followed by the T5 states of the raw prompt (256 rows, the pipeline's default
  ``max_sequence_length``; zeros where the folder has no T5 encoder); the pooled
  condition is both CLIP projections. The transformer predicts the flow velocity ``v = eps - x_0``
  of ``x_t = (1 - s) x_0 + s eps`` (``prediction_type="flow"``) at ``timestep = 1000 s``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..gmm.schedules import NoiseSchedule

__all__ = ["FAMILIES", "REFUSED", "FlowMatchSchedule", "model_family", "distillation_notes", "pack_condition",
           "unpack_condition"]

#: Pipeline class (``model_index.json``'s ``_class_name``) -> memgeo's family name.
FAMILIES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl", "StableDiffusion3Pipeline": "sd3"}

#: Pipeline classes memgeo knows and refuses (class-name prefix -> why), as data.
REFUSED = {
    "Flux": "FLUX is not a supported family. Its usual generation is one pass with no unconditional branch: FLUX.1-dev "
            "is guidance-distilled (the guidance scale is an input of the transformer) and FLUX.1-schnell is "
            "timestep-distilled, so the guidance gap of that generation is not defined; FluxPipeline can evaluate a "
            "negative prompt under true_cfg_scale, which gives a gap, but memgeo has no FLUX family (its T5 + CLIP "
            "conditioning, packed latents and flow schedule) to read it through",
}

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


def model_family(index: dict, path: str) -> str:
    """The family of a folder from its ``model_index.json`` contents; a clear error for anything else."""
    name = str(index.get("_class_name", "StableDiffusionPipeline"))
    if name in FAMILIES:
        return FAMILIES[name]
    for prefix, why in REFUSED.items():
        if name.startswith(prefix):
            raise ValueError(f"model {path!r} is a {name}: {why}")
    raise ValueError(f"model {path!r} is a {name}; memgeo supports {', '.join(sorted(FAMILIES))} folders")


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


class FlowMatchSchedule:
    r"""The rectified-flow schedule of a ``FlowMatchEulerDiscreteScheduler``: ``x_t = (1 - s) x_0 + s eps``
    with ``s = t / T`` (``t`` is the network's timestep, ``T = num_train_timesteps``), so ``alpha_t = 1 - t / T``
    and ``sigma_t = t / T``; timesteps are real numbers. :meth:`timesteps` are the scheduler's own (its
    ``shift``, and ``mu`` where it shifts dynamically)."""

    kind = "flow"
    steps_offset = 0

    def __init__(self, config: dict, *, mu: float | None = None):
        self.config = dict(config)
        self.num_train_timesteps = int(self.config.get("num_train_timesteps", 1000))
        self.mu = mu

    def _check(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > self.num_train_timesteps).any()):
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps}], got {t.tolist()}")
        return t

    def alpha(self, t) -> torch.Tensor:
        return 1.0 - self._check(t) / self.num_train_timesteps

    def sigma(self, t) -> torch.Tensor:
        return self._check(t) / self.num_train_timesteps

    def scheduler(self, n_steps: int):
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(self.config)
        sched.set_timesteps(n_steps, **({"mu": self.mu} if self.mu is not None else {}))
        return sched

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """The scheduler's ``n_steps`` timesteps (float64, descending; the first is pure noise, ``alpha = 0``)."""
        return self.scheduler(n_steps).timesteps.double()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``alpha^2 / (alpha^2 + sigma^2)`` on the scheduler's training grid (for fingerprints)."""
        s = torch.arange(1, self.num_train_timesteps + 1, dtype=torch.float64) / self.num_train_timesteps
        shift = float(self.config.get("shift", 1.0))
        s = shift * s / (1 + (shift - 1) * s)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)


class TextConditioning:
    """Prompt token ids -> the packed condition of a family (see the module docstring)."""

    def __init__(self, family: str, tokenizers: list, encoders: list, *, joint_dim: int | None = None,
                 force_zeros: bool = False, t5_length: int = 256):
        self.family = family
        self.tokenizers = tokenizers  # CLIP tokenizers (one vocabulary), then T5's where present
        self.encoders = encoders  # aligned with tokenizers; SD3's T5 may be None
        self.joint_dim = joint_dim
        self.force_zeros = force_zeros
        self.t5_length = t5_length

    @property
    def clip_encoders(self) -> list:
        """The CLIP encoders, which read the first tokenizer's ids (token-level gradients flow through these)."""
        return self.encoders[:1] if self.family == "sd" else self.encoders[:2]

    @property
    def n_tokens(self) -> int:
        """Token rows of the condition (before the pooled rows): CLIP's length, and SD3's T5 rows after it."""
        return self.tokenizers[0].model_max_length + (self.t5_length if self.family == "sd3" else 0)

    @property
    def pooled_dim(self) -> int | None:
        """Width of the pooled embedding: SDXL's second encoder's projection, SD3's two projections; None for SD."""
        if self.family == "sd":
            return None
        projected = self.encoders[1:2] if self.family == "sdxl" else self.encoders[:2]
        return sum(e.config.projection_dim for e in projected)

    def ids(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizers[0]
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

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

    def encode_ids(self, ids: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        """``[B, L]`` ids of the first tokenizer -> the packed condition ``[B, L', D]``.

        ``texts``: the prompts themselves, which SD3's T5 encoder reads as ``StableDiffusion3Pipeline`` gives them
        (raw, up to ``t5_length`` T5 tokens). Without them (token-level tools, which hold only CLIP ids) T5 reads the
        CLIP ids decoded back to text: lowercased, cut at CLIP's 77 positions."""
        device = next(self.encoders[0].parameters()).device
        ids = ids.to(device)
        if self.family == "sd":
            return self.encoders[0](ids)[0]
        eos = self.tokenizers[0].eos_token_id
        outs = [enc(self._repad(ids, eos, tok.pad_token_id), output_hidden_states=True)
                for tok, enc in zip(self.tokenizers[:2], self.encoders[:2])]
        clip = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        # SDXL: the second encoder's projection (the first has none); SD3: both projections
        pooled = outs[1][0] if self.family == "sdxl" else torch.cat([o[0] for o in outs], dim=-1)
        if self.family == "sdxl":
            cond = clip
        else:
            B = ids.shape[0]
            if self.encoders[2] is None:
                t5 = torch.zeros(B, self.t5_length, self.joint_dim, dtype=clip.dtype, device=device)
            else:
                text = list(texts) if texts is not None else self.tokenizers[0].batch_decode(ids, skip_special_tokens=True)
                ids3 = self.tokenizers[2](text, padding="max_length", max_length=self.t5_length, truncation=True,
                                          add_special_tokens=True, return_tensors="pt").input_ids.to(device)
                t5 = self.encoders[2](ids3)[0]
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            cond = torch.cat([clip, t5], dim=-2)
        return pack_condition(cond, pooled)

    def unconditional(self) -> torch.Tensor:
        """The unconditional condition ``[L', D]``: the empty prompt's, or zeros (SDXL's ``force_zeros_for_empty_prompt``)."""
        with torch.no_grad():
            emb = self.encode_ids(self.ids([""]), [""])[0]
        return torch.zeros_like(emb) if self.force_zeros else emb


def call_network(family: str, network, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, conditioning,
                 time_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The denoiser's raw output for latents ``x`` at timesteps ``t`` ``[B]`` and packed conditions ``emb``."""
    if family == "sd":
        return network(x, t, encoder_hidden_states=emb).sample
    states, pooled = unpack_condition(emb, conditioning.n_tokens, conditioning.pooled_dim)
    if family == "sdxl":
        ids = time_ids.to(x.device, x.dtype).expand(x.shape[0], -1)
        return network(x, t, encoder_hidden_states=states, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    return network(hidden_states=x, timestep=t, encoder_hidden_states=states, pooled_projections=pooled).sample


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


def schedule_for(family: str, scheduler_config: dict, network_config) -> NoiseSchedule | FlowMatchSchedule:
    """The noise schedule of a family: VP from the betas (sd, sdxl), the flow schedule (sd3)."""
    if family != "sd3":
        from .adapter import schedule_from_config

        return schedule_from_config(scheduler_config)
    mu = None
    if scheduler_config.get("use_dynamic_shifting"):
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        side = network_config.sample_size
        seq = (side // network_config.patch_size) ** 2
        mu = calculate_shift(seq, scheduler_config.get("base_image_seq_len", 256), scheduler_config.get("max_image_seq_len", 4096),
                             scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.16))
    return FlowMatchSchedule(scheduler_config, mu=mu)
