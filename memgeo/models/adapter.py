r"""A diffusers text-to-image checkpoint exposed through the score-model interface.

``DiffusersScoreModel`` wraps a ``UNet2DConditionModel`` (or any module with its call signature),
the noise schedule of its scheduler and a prompt encoder. It offers ``eps(x, t, cond)``,
``score(x, t, cond)``, ``eps_pair(x, t, cond)`` (unconditional and conditional predictions from one
batched call), ``alpha(t)``, ``sigma(t)`` and ``timesteps(n_steps)``, so every memgeo estimator
and signal runs on it unchanged. Weights may be fp16/bf16; the estimator math runs in ``dtype``
(float32 by default, float64 allowed): inputs are cast to the weights' dtype for the UNet call
and its output back.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from .._checks import check_finite, check_tensor
from ..gmm.schedules import NoiseSchedule
from ..parameterization import PREDICTION_TYPES, eps_to_score, to_eps, to_x0
from .families.sd import SD

__all__ = ["DiffusersScoreModel", "schedule_from_config"]


#: The float64 VP schedule of a diffusers scheduler config (see :meth:`NoiseSchedule.from_diffusers_config`).
schedule_from_config = NoiseSchedule.from_diffusers_config


class DiffusersScoreModel:
    """A conditional diffusion model (UNet + schedule + prompt encoder) as a score model.

    Args:
        unet: a ``UNet2DConditionModel`` or a module with its call signature
            ``unet(sample, timestep, encoder_hidden_states=...) -> output with .sample``.
        schedule: the model's noise schedule (see :func:`schedule_from_config`).
        encode_prompt: ``list[str] -> [N, L, D]`` prompt embeddings (``""`` is the unconditional prompt).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        event_shape: shape of one latent, e.g. ``(4, 64, 64)``.
        dtype: dtype of the estimator math (float32 or float64).
        device: where the UNet runs.

    ``cond`` may be ``None`` (unconditional), a prompt, a list of ``B`` prompts (one per row), or
    prompt embeddings ``[L, D]`` (all rows) or ``[B, L, D]`` (per row).
    """

    def __init__(
        self,
        unet,
        schedule: NoiseSchedule,
        encode_prompt: Callable[[list[str]], torch.Tensor],
        *,
        prediction_type: str,
        event_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype (the estimator math) must be torch.float32 or torch.float64, got {dtype}")
        self.unet = unet
        self.schedule = schedule
        self.encode_prompt = encode_prompt
        self.prediction_type = prediction_type
        self.event_shape = tuple(int(n) for n in event_shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.unet_dtype = next(iter(unet.parameters()), torch.empty(0, dtype=dtype)).dtype
        self._cache: dict[str, torch.Tensor] = {}
        self.n_unet_rows = 0  # latents passed through the UNet so far (a JVP pass counts once)
        self.name = type(unet).__name__  # the class of its network; a folder or hub id once loaded
        self.folder: Path | None = None  # the local folder it was loaded from (None: built in memory, or a hub id)
        self.vae_scale_factor = 8  # pixels per latent position along each side (Stable Diffusion's VAE)
        self._modules_to_fingerprint = (unet,)
        self._tokenizer_size = None
        self._identity = None
        self.tokenizer = None  # set by from_pretrained: token-level tools (memgeo.explain) need them
        self.text_encoder = None
        self.text_encoders: list = []  # every encoder that reads the tokenizer's ids (SDXL and SD3: two)
        self.spec = SD  # its family (memgeo.models.families): how it is called, conditioned and loaded
        self.conditioning = None  # the family's TextConditioning, set by from_pretrained
        self.time_ids = None  # SDXL's added time ids
        self.lora: Path | None = None
        self._lora_digest: str | None = None

    @property
    def family(self) -> str:
        """The name of its model family (``"sd"``, ``"sdxl"``, ``"sd3"``)."""
        return self.spec.name

    @property
    def identity(self) -> dict:
        """``{"name", "fingerprint"}``: the fingerprint digests every weight tensor's name, shape, dtype
        and a strided sample of its values, the schedule and the prediction type, so two checkpoints
        of one architecture differ (result stores refuse to mix them)."""
        if self._identity is None:
            h = hashlib.sha256()
            h.update(repr((self.prediction_type, self.event_shape, self._tokenizer_size)).encode())
            if self.spec.in_fingerprint or self._lora_digest is not None:
                h.update(repr((self.family, self._lora_digest)).encode())
            h.update(self.schedule.alphas_cumprod.double().numpy().tobytes())
            for module in self._modules_to_fingerprint:
                for name, p in module.state_dict().items():
                    flat = p.detach().reshape(-1)
                    sample = flat[:: max(1, flat.numel() // 256)].double().cpu().numpy()
                    h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
                    h.update(sample.tobytes())
            self._identity = {"name": str(self.name), "fingerprint": h.hexdigest()[:16]}
        return self._identity

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        weights_dtype: torch.dtype = torch.float32,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        allow_download: bool = False,
        variant: str | None = None,
        lora: str | os.PathLike | None = None,
    ) -> "DiffusersScoreModel":
        """Load a Stable Diffusion v1.x (epsilon) / v2.x (v-prediction), SDXL or Stable Diffusion 3 folder or hub id.

        The family comes from the folder's ``model_index.json`` (:mod:`memgeo.models.families`); a
        guidance-distilled model (FLUX.1-dev style) is refused, since it has no unconditional branch.
        ``weights_dtype`` is the dtype the weights are loaded in (float32 unless asked: float16 and
        bfloat16 halve the memory). Only safetensors weights are read. Nothing is downloaded unless ``allow_download=True``
        and ``HF_HUB_OFFLINE`` is unset; otherwise a hub id must already be in the local cache.
        A folder needs its denoiser (``unet/`` or ``transformer/``), ``scheduler/``, text encoders and
        tokenizers; a VAE is not needed (memgeo works on latents).

        ``lora``: a LoRA adapter (a ``.safetensors`` file or a folder holding one, as diffusers saves it),
        loaded through the family pipeline's own ``load_lora_weights``; the adapter's bytes enter the
        model's fingerprint, so results of the base model and of the fine-tune are never mixed.
        """
        from .loading import load_pretrained

        return load_pretrained(cls, path_or_id, weights_dtype=weights_dtype, dtype=dtype, device=device,
                               allow_download=allow_download, variant=variant, lora=lora)

    # ------------------------------------------------------------------ schedule
    def alpha(self, t) -> torch.Tensor:
        return self.schedule.alpha(t)

    def sigma(self, t) -> torch.Tensor:
        return self.schedule.sigma(t)

    def timesteps(self, n_steps: int) -> torch.Tensor:
        return self.schedule.timesteps(n_steps)  # the scheduler config's spacing (VP), or the flow scheduler's own

    # ------------------------------------------------------------------ conditioning
    def embed(self, cond, batch: int) -> torch.Tensor:
        """Prompt embeddings ``[batch, L, D]`` for ``cond`` (see the class docstring)."""
        if cond is None or isinstance(cond, str):
            if cond not in self._cache:
                if cond is None and self.conditioning is not None:
                    self._cache[cond] = self.conditioning.unconditional()
                else:
                    self._cache[cond] = self.encode_prompt(["" if cond is None else cond])[0]
            return self._cache[cond].expand(batch, *self._cache[cond].shape)
        if isinstance(cond, torch.Tensor):
            if cond.dim() == 2:
                return cond.to(self.device).expand(batch, *cond.shape)
            if cond.dim() == 3 and cond.shape[0] == batch:
                return cond.to(self.device)
            raise ValueError(f"cond embeddings must have shape [L, D] or [B, L, D] with B = {batch}, got {tuple(cond.shape)}")
        if isinstance(cond, (list, tuple)) and all(isinstance(c, str) or c is None for c in cond):
            if len(cond) != batch:
                raise ValueError(f"cond must hold one prompt per row: {batch} expected, got {len(cond)}")
            return torch.stack([self.embed(c, 1)[0] for c in cond])
        raise ValueError(f"cond must be None, a prompt, a list of prompts or an embedding tensor; got {type(cond).__name__}")

    def _need_tokenizer(self):
        if self.tokenizer is None or self.text_encoder is None:
            raise ValueError("this model was built without its tokenizer and text encoder; load it with "
                             "DiffusersScoreModel.from_pretrained for token-level tools")

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """The token ids of ``prompt`` as the text encoder sees them: start, tokens, end, padding ``[L]``."""
        self._need_tokenizer()
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        return self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids[0]

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's own tokens, as text (start, end and padding excluded); token ``i`` is row ``i + 1``
        of the prompt embedding."""
        self._need_tokenizer()
        ids = self.tokenizer(prompt, truncation=True, max_length=self.tokenizer.model_max_length).input_ids[1:-1]
        return [self.tokenizer.decode([i]).strip() for i in ids]

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[B, L, D]`` of token ids ``[B, L]`` (padded to the encoder's length), in ``dtype``."""
        self._need_tokenizer()
        with torch.no_grad():
            if self.conditioning is not None:
                return self.conditioning.encode_ids(ids).to(self.dtype)
            return self.text_encoder(ids.to(self.device))[0].to(self.dtype)

    def condition_embedding(self, cond) -> torch.Tensor:
        """The prompt embedding ``[L, D]`` of ``cond`` (a prompt), to adapt and pass back as ``cond``."""
        if not isinstance(cond, str):
            raise ValueError(f"cond must be a prompt string, got {type(cond).__name__}")
        return self.embed(cond, 1)[0].detach().clone()

    # ------------------------------------------------------------------ predictions
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, min_dim=1, dtype=self.dtype)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.event_shape))}], got {tuple(x.shape)}")
        return check_finite("x", x)

    def _coef(self, t, x: torch.Tensor):
        a = self.alpha(t).to(x.dtype).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        s = self.sigma(t).to(x.dtype).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        return a, s

    def _unet_eps(self, x: torch.Tensor, t, emb: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        tt = torch.as_tensor(t, device=self.device).reshape(-1)
        tt = tt.expand(B) if tt.numel() == 1 else tt
        out = self._raw(x, tt, emb)
        a, s = self._coef(tt.cpu(), x)
        return to_eps(out, x, a, s, self.prediction_type)

    def _raw(self, x: torch.Tensor, tt: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The network's own output (eps, v or flow velocity) in ``x``'s dtype; ``tt`` ``[B]``."""
        out = self.spec.call(self.unet, x.to(self.device, self.unet_dtype), tt.to(self.device),
                             emb.to(self.device, self.unet_dtype), self.conditioning, self.time_ids)
        self.n_unet_rows += x.shape[0]
        return out.to(x.dtype).to(x.device)

    def eps(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Noise prediction ``eps_hat(x, t | cond)``, shape ``[B, *event]``."""
        x = self._check_x(x)
        return self._unet_eps(x, t, self.embed(cond, x.shape[0]))

    def _doubled(self, x: torch.Tensor, t, cond):
        """The batch of both branches: ``([x; x], timesteps [2B], [unconditional; cond] embeddings)``."""
        x = self._check_x(x)
        B = x.shape[0]
        tt = torch.as_tensor(t).reshape(-1)
        tt = tt.repeat(2) if tt.numel() == B else tt.expand(2 * B)
        return torch.cat([x, x]), tt, torch.cat([self.embed(None, B), self.embed(cond, B)])

    def eps_pair(self, x: torch.Tensor, t, cond):
        """``(eps_u, eps_c)`` from one UNet call on the doubled batch (2 evaluations per row)."""
        xx, tt, emb = self._doubled(x, t, cond)
        out = self._unet_eps(xx, tt, emb)
        return out.chunk(2)

    def denoised_pair(self, x: torch.Tensor, t, cond):
        """``(x0_u, x0_c)``, the denoised estimates of both branches read from the raw outputs (one batched call):
        defined at pure noise (``alpha_t = 0``, a flow model's first step), where ``eps`` carries nothing."""
        xx, tt, emb = self._doubled(x, t, cond)
        a, s = self._coef(tt, xx)
        return to_x0(self._raw(xx, tt, emb), xx, a, s, self.prediction_type).chunk(2)

    def score(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        r"""Score :math:`\nabla \log p_t(x \mid cond) = -\hat\epsilon / \sigma_t`."""
        _, s = self._coef(t, x)
        return eps_to_score(self.eps(x, t, cond), s)

    def __repr__(self) -> str:
        return (f"DiffusersScoreModel(event_shape={self.event_shape}, prediction_type={self.prediction_type!r}, "
                f"unet_dtype={self.unet_dtype}, dtype={self.dtype}, device={self.device})")
