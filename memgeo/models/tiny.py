"""An offline tiny Stable Diffusion pipeline, for tests and examples.

Every component is built from a config (no download): a tiny ``UNet2DConditionModel``, a
``CLIPTextModel``, a ``CLIPTokenizer`` on a byte-level vocabulary written here (it tokenizes any
prompt), a tiny ``AutoencoderKL`` and a DDIM scheduler with Stable Diffusion's schedule. The
pipeline is saved with ``save_pretrained`` in the Stable Diffusion folder layout (safetensors), so
loading it exercises exactly the path a real checkpoint takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch

__all__ = ["build_tiny_pipeline", "build_tiny_sdxl_pipeline", "build_tiny_sd3_pipeline", "build_tiny_lora",
           "write_byte_vocabulary", "TINY_TEXT_DIM"]

TINY_TEXT_DIM = 32


def _byte_characters() -> list[str]:
    """The 256 printable characters that byte-level BPE uses for the bytes 0..255 (GPT-2's table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_byte_vocabulary(folder: str | os.PathLike, words=()) -> tuple[Path, Path]:
    """Write ``vocab.json`` (start/end tokens and the 256 byte characters, each also with ``</w>``)
    and ``merges.txt``; returns their paths.

    Without ``words`` there are no merges: every character is a token. Each of ``words`` (lower-case
    ASCII letters) gets the chain of merges that makes it one token; any other text still
    tokenizes, character by character.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        if not re.fullmatch(r"[a-z]+", word):
            raise ValueError(f"words must be lower-case ASCII letters, got {word!r}")
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        ranks = {m: i for i, m in enumerate(merges)}
        while len(parts) > 1:  # apply the merges so far (lowest rank first), then add one for what is left
            pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == len(ranks):
                merges.append((parts[0], parts[1]))
                ranks[merges[-1]] = rank
                i = 0
                tokens.append(parts[0] + parts[1])
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder / "vocab.json", folder / "merges.txt"


def build_tokenizer(workdir: str | os.PathLike, words=()):
    from transformers import CLIPTokenizer

    vocab, merges = write_byte_vocabulary(workdir, words)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=77, pad_token="<|endoftext|>")


def build_text_encoder(vocab_size: int, *, hidden_size: int = TINY_TEXT_DIM, layers: int = 2, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config).eval()


def build_unet(*, in_channels: int = 4, sample_size: int = 8, cross_attention_dim: int = TINY_TEXT_DIM,
               block_out_channels=(32, 64), seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, layers_per_block=1,
        block_out_channels=tuple(block_out_channels), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        norm_num_groups=8, attention_head_dim=4,
    ).eval()


def sd_scheduler(prediction_type: str = "epsilon"):
    """DDIM with Stable Diffusion's scaled-linear schedule (the settings SD pipelines use)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type=prediction_type,
    )


@contextlib.contextmanager
def float32_default():
    """Build modules in float32 whatever torch's default dtype is (weights are saved as built)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_tiny_pipeline(folder: str | os.PathLike, prediction_type: str = "epsilon", *, seed: int = 0) -> Path:
    """Build a tiny Stable Diffusion pipeline offline and save it to ``folder``; returns the folder.

    ``prediction_type`` is ``"epsilon"`` (the SD v1.x layout) or ``"v_prediction"`` (SD v2.x).
    """
    from diffusers import StableDiffusionPipeline

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)
    with float32_default():
        text_encoder = build_text_encoder(len(tokenizer), seed=seed)
        unet = build_unet(seed=seed)
        vae = _tiny_vae(seed)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sd_scheduler(prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl_pipeline(folder: str | os.PathLike, prediction_type: str = "epsilon", *, seed: int = 0,
                             force_zeros_for_empty_prompt: bool = True) -> Path:
    """A tiny SDXL pipeline (two CLIP text encoders, pooled embeddings, added time ids), saved to ``folder``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    folder = Path(folder)
    tokenizer, text_encoder, text_encoder_2 = _tiny_clip_parts(seed, projected_first=False)
    with float32_default():
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=TINY_TEXT_DIM + 6 * 8, cross_attention_dim=2 * TINY_TEXT_DIM,
            norm_num_groups=8,
        ).eval()
        vae = _tiny_vae(seed)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type=prediction_type)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sd3_pipeline(folder: str | os.PathLike, *, seed: int = 0, shift: float = 3.0, t5: bool = False) -> Path:
    """A tiny Stable Diffusion 3 pipeline (MMDiT transformer, two CLIP text encoders, flow matching), saved to
    ``folder``; with ``t5`` also a tiny T5 encoder (its tokenizer the byte-level one, so any prompt tokenizes, one
    token per character: a long prompt outlasts CLIP's 77 positions), else none."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    folder = Path(folder)
    tokenizer, text_encoder, text_encoder_2 = _tiny_clip_parts(seed, projected_first=True)
    with float32_default():
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=2 * TINY_TEXT_DIM,
            pooled_projection_dim=2 * TINY_TEXT_DIM, pos_embed_max_size=16,
        ).eval()
        vae = _tiny_vae(seed, latent_channels=4, shift_factor=0.0)
        text_encoder_3 = None
        if t5:
            from transformers import T5Config, T5EncoderModel

            torch.manual_seed(seed + 3)
            text_encoder_3 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=2 * TINY_TEXT_DIM, d_kv=8,
                                                     d_ff=2 * TINY_TEXT_DIM, num_layers=1, num_heads=4,
                                                     pad_token_id=tokenizer.pad_token_id)).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                                    vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                    tokenizer_2=tokenizer, text_encoder_3=text_encoder_3,
                                    tokenizer_3=tokenizer if t5 else None)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _tiny_clip_parts(seed: int, *, projected_first: bool):
    """The byte-level tokenizer and two tiny CLIP text encoders (the second with a projection; the first too for
    SD3, not for SDXL), seeded: the SDXL and SD3 builders' text side."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)
    n = len(tokenizer)
    config = CLIPTextConfig(
        vocab_size=n, hidden_size=TINY_TEXT_DIM, intermediate_size=2 * TINY_TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
        projection_dim=TINY_TEXT_DIM,
    )
    with float32_default():
        torch.manual_seed(seed)
        first = (CLIPTextModelWithProjection if projected_first else CLIPTextModel)(config).eval()
        return tokenizer, first, CLIPTextModelWithProjection(config).eval()


def _tiny_vae(seed: int, latent_channels: int = 4, shift_factor: float | None = None):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    extra = {"shift_factor": shift_factor} if shift_factor is not None else {}
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(32,), layers_per_block=1,
        norm_num_groups=8, sample_size=16, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        **extra,
    ).eval()


def build_tiny_lora(base: str | os.PathLike, folder: str | os.PathLike, *, rank: int = 2, scale: float = 0.5,
                    seed: int = 0) -> Path:
    """A tiny LoRA adapter for the denoiser of the tiny pipeline in ``base`` (any family), with random nonzero
    weights, saved by the family pipeline's own ``save_lora_weights`` (the format real adapters use); returns
    the adapter's ``.safetensors`` file."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    index = json.loads((Path(base) / "model_index.json").read_text())
    pipe_cls = getattr(diffusers, index["_class_name"])
    sub = "transformer" if (Path(base) / "transformer").is_dir() else "unet"
    net_cls = getattr(diffusers, index[sub][1])
    net = net_cls.from_pretrained(base, subfolder=sub)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * scale / p.shape[-1] ** 0.5)
    layers = get_peft_model_state_dict(net)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe_cls.save_lora_weights(folder, **{f"{sub}_lora_layers": layers}, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"
