r"""Stable Diffusion 3: ``StableDiffusion3Pipeline``. CLIP-L and CLIP-G penultimate states side by side, zero-padded
to the T5 width, followed by the T5 states of the raw prompt (256 rows, the pipeline's default
``max_sequence_length``; zeros where the folder has no T5 encoder); the pooled condition is both CLIP projections.
The transformer predicts the flow velocity ``v = eps - x_0`` of ``x_t = (1 - s) x_0 + s eps``
(``prediction_type="flow"``) at ``timestep = 1000 s``; it attends jointly over text and image, so it has no UNet
cross-attention."""

from __future__ import annotations

import torch

from ..sizes import SD3_MEDIUM_TRANSFORMER_CONFIG
from .base import FamilySpec, TwoClipConditioning, pack_condition, unpack_condition

__all__ = ["SD3"]


class SD3Conditioning(TwoClipConditioning):
    @property
    def n_tokens(self) -> int:
        return self.tokenizers[0].model_max_length + self.t5_length

    @property
    def pooled_dim(self) -> int:
        return sum(e.config.projection_dim for e in self.encoders[:2])

    def encode_ids(self, ids: torch.Tensor, texts: list[str] | None = None) -> torch.Tensor:
        """``texts``: the prompts themselves, which the T5 encoder reads as ``StableDiffusion3Pipeline`` gives them
        (raw, up to ``t5_length`` T5 tokens). Without them (token-level tools, which hold only CLIP ids) T5 reads the
        CLIP ids decoded back to text: lowercased, cut at CLIP's 77 positions."""
        outs = self.clip_outputs(ids)
        clip = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
        pooled = torch.cat([o[0] for o in outs], dim=-1)
        device = self.device
        if self.encoders[2] is None:
            t5 = torch.zeros(ids.shape[0], self.t5_length, self.joint_dim, dtype=clip.dtype, device=device)
        else:
            text = list(texts) if texts is not None else self.tokenizers[0].batch_decode(ids, skip_special_tokens=True)
            ids3 = self.tokenizers[2](text, padding="max_length", max_length=self.t5_length, truncation=True,
                                      add_special_tokens=True, return_tensors="pt").input_ids.to(device)
            t5 = self.encoders[2](ids3)[0]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return pack_condition(torch.cat([clip, t5], dim=-2), pooled)


class StableDiffusion3(FamilySpec):
    name = "sd3"
    pipeline = "StableDiffusion3Pipeline"
    real_size = ("SD3Transformer2DModel", SD3_MEDIUM_TRANSFORMER_CONFIG, (16, 128, 128))
    denoiser = "transformer"
    cross_attention = False

    def load_network(self, path, weights):
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", **weights)

    def load_text(self, path, index, weights, kwargs):
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder=f, **kwargs) for f in ("tokenizer", "tokenizer_2")]
        encoders = [CLIPTextModelWithProjection.from_pretrained(path, subfolder=f, **weights)
                    for f in ("text_encoder", "text_encoder_2")]
        if (index.get("text_encoder_3") or [None])[0] is not None:
            from transformers import AutoTokenizer, T5EncoderModel

            encoders.append(T5EncoderModel.from_pretrained(path, subfolder="text_encoder_3", **weights))
            tokenizers.append(AutoTokenizer.from_pretrained(path, subfolder="tokenizer_3", **kwargs))
        else:
            encoders.append(None)
            tokenizers.append(None)
        return tokenizers, encoders

    def lora_pipeline(self, parts):
        import diffusers

        tok, enc = parts["tokenizers"], parts["encoders"]
        return diffusers.StableDiffusion3Pipeline(transformer=parts["network"],
                                                  scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None,
                                                  text_encoder=enc[0], tokenizer=tok[0], text_encoder_2=enc[1],
                                                  tokenizer_2=tok[1], text_encoder_3=enc[2], tokenizer_3=tok[2])

    def conditioning(self, tokenizers, encoders, network_config, index):
        return SD3Conditioning(tokenizers, encoders, joint_dim=getattr(network_config, "joint_attention_dim", None))

    def prediction_type(self, scheduler_config):
        return "flow"

    def schedule(self, scheduler_config, network_config):
        """The flow schedule, shifted as the scheduler config says (dynamically: by the image's sequence length)."""
        from ...gmm.schedules import FlowMatchSchedule

        mu = None
        if scheduler_config.get("use_dynamic_shifting"):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            seq = (network_config.sample_size // network_config.patch_size) ** 2
            mu = calculate_shift(seq, scheduler_config.get("base_image_seq_len", 256),
                                 scheduler_config.get("max_image_seq_len", 4096),
                                 scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.16))
        return FlowMatchSchedule(scheduler_config, mu=mu)

    def call(self, network, x, t, emb, conditioning, time_ids=None):
        states, pooled = unpack_condition(emb, conditioning.n_tokens, conditioning.pooled_dim)
        return network(hidden_states=x, timestep=t, encoder_hidden_states=states, pooled_projections=pooled).sample


SD3 = StableDiffusion3()
