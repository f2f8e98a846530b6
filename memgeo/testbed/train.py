"""Training the testbed: seeded, resumable from safetensors checkpoints, saved in the Stable Diffusion layout."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..models.tiny import (
    build_text_encoder,
    build_tokenizer,
    build_unet,
    float32_default,
    sd_scheduler,
)
from .canvas import (
    DIGITS,
    THICKNESS,
    CanvasData,
    build_canvas_data,
    to_latents,
)
from .checkpoint import RESUME_WARMUP_STEPS, recover_checkpoint, _ema_init, _ema_pairs, _ema_step, _resume, _save_checkpoint
from .export import _Run, _save_evaluated
from .items import _step_predictions, _TrainingItems
from .lora import _base_name, _lora_components
from .options import TrainingSettings
from .regimes import (
    REGIMES,
    SD_GRADED_LADDER_SHARES,
    SD_LADDER_SHARES,
    SD_LOCAL_LADDER_SHARES,
    SD_SHARED_COMPANIONS,
    SD_SHARED_LADDER_SHARES,
    SD_SHARES,
    learning_rate,
)

__all__ = ["ARCHITECTURE", "REGIMES", "SD_SHARES", "SD_LADDER_SHARES", "SD_LOCAL_LADDER_SHARES", "SD_GRADED_LADDER_SHARES", "SD_SHARED_LADDER_SHARES", "SD_SHARED_COMPANIONS", "PRECISIONS", "train_testbed", "TrainingSettings", "prepare_training", "learning_rate"]


#: Architecture of the testbed's networks (recorded in ``testbed.json``).
ARCHITECTURE = {"unet_channels": (64, 128), "text_dim": 64, "text_layers": 2, "max_length": 32}


def _components(tokenizer_len: int, seed: int, arch: dict):

    with float32_default():
        text_encoder = build_text_encoder(tokenizer_len, hidden_size=arch["text_dim"], layers=arch["text_layers"], seed=seed)
        unet = build_unet(in_channels=4, sample_size=arch["sample_size"], cross_attention_dim=arch["text_dim"],
                          block_out_channels=arch["unet_channels"], seed=seed)
    return unet, text_encoder


#: Training precisions: float32, or mixed precision under bfloat16 autocast (:func:`train_testbed`).
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def prepare_training(unet, text_encoder, *, lr: float, device="cpu") -> torch.optim.Optimizer:
    """Move the networks to ``device`` in the layout they train fastest in, and return their optimizer (AdamW).

    Channels-last convolutions, the fused AdamW step and the classic attention kernel (one batched matrix product
    per head group, no flash kernel: the testbed's heads are 4-16 wide) compute the same arithmetic as the defaults,
    faster on a 2-core CPU (``benchmarks/bench_training.py`` prints the ratio)."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.to(device, memory_format=torch.channels_last)
    text_encoder.to(device)
    unet.set_attn_processor(AttnProcessor())
    trained = [p for p in (*unet.parameters(), *text_encoder.parameters()) if p.requires_grad]
    return torch.optim.AdamW(trained, lr=lr, fused=True)


def train_testbed(
    out_dir: str | os.PathLike,
    settings: TrainingSettings | None = None,
    *,
    data: CanvasData | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    **options,
) -> Path:
    """Train the testbed (resumable from ``out_dir/checkpoint``) and save it in the SD layout.

    ``settings`` (:class:`~memgeo.testbed.options.TrainingSettings`, where every option is described), with any of its
    fields given as keywords (``regime=``, ``steps=``, ``seed=``...) replacing its own, say what the run is.
    Checkpoints hold model, optimizer and random-generator state as safetensors (no pickles), written whole; a run
    that is stopped resumes at its last checkpoint and continues bit for bit (a compact checkpoint, or one without
    AdamW's state, resumes the same batches with AdamW restarted). ``data`` defaults to
    :func:`~memgeo.testbed.canvas.build_canvas_data` for ``seed`` under ``regime``; its settings are recorded in
    ``testbed.json`` so that :func:`testbed_data` rebuilds it, and in the checkpoint, which refuses to resume on other
    data.

    ``device``: where the networks train (``"cuda"`` on a GPU machine); batches, noise and timesteps are drawn on the
    CPU from one seeded generator whatever the device, so a run's data does not depend on it.

    ``overwrite``: ``out_dir`` may hold a trained model (or ground truth), replaced by a run trained from scratch;
    without it such a folder is refused before any work (:func:`~memgeo.testbed.folder.check_model_output`), unless
    it is this run's own checkpoint resuming and holds no ground truth.
    """
    s = (settings or TrainingSettings()).given(**options)
    regime, steps, batch_size, lr, seed = s.regime, s.steps, s.batch_size, s.lr, s.seed
    dropout, dropout_duplicated, checkpoint_every, snapshot_every = (s.dropout, s.dropout_duplicated,
                                                                     s.checkpoint_every, s.snapshot_every)
    mitigate_threshold, lr_decay_steps, base, precision = s.mitigate_threshold, s.lr_decay_steps, s.base, s.precision
    ema_decay, compact = s.ema_decay, s.compact
    from tqdm.auto import tqdm

    from .folder import check_model_output, weights_fingerprint

    out = Path(out_dir)
    ckpt = out / "checkpoint"
    steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold = _check_arguments(
        regime, steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold, snapshot_every, base,
        precision)
    if ema_decay is not None and (isinstance(ema_decay, bool) or not 0.0 < float(ema_decay) < 1.0):
        raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
    if compact and REGIMES[regime].get("lora"):
        raise ValueError("compact checkpoints are for networks trained from scratch, not a fine-tune (its frozen base "
                         "would be rounded to half precision)")
    if base is not None and Path(out).resolve() == Path(base).resolve():
        raise ValueError(f"out_dir {str(out)!r} is the fine-tune's base: give another folder")
    recover_checkpoint(ckpt)  # a save a stop interrupted is finished or undone first
    check_model_output(out, overwrite=overwrite)  # before anything is written
    if overwrite:  # from scratch: what marks the folder's old run goes first, so a stop leaves no mixed folder
        for old in (ckpt, out / "snapshots"):
            if old.is_dir():
                shutil.rmtree(old)
        (out / "testbed.json").unlink(missing_ok=True)
    device = torch.device(device)
    lora = REGIMES[regime].get("lora")
    data = data if data is not None else build_canvas_data(seed=seed, **REGIMES[regime]["data"])
    latents = to_latents(data.images)
    ckpt.mkdir(parents=True, exist_ok=True)
    unet, text_encoder, tokenizer, arch = _networks(regime, base, seed, latents.shape[-1], ckpt)
    schedule = sd_scheduler("epsilon")
    abar = schedule.alphas_cumprod.float()
    items = _TrainingItems.of(data, tokenizer, arch["max_length"])
    dropped = {"duplicated": 0, "single": 0, "unconditional": 0}

    gen = torch.Generator().manual_seed(seed)
    opt = prepare_training(unet, text_encoder, lr=lr, device=device)
    start, loss_avg = 0, float("nan")
    run = _Run(data, tokenizer, schedule, arch, steps, batch_size, lr, lr_decay_steps, dropout, dropout_duplicated,
               mitigate_threshold, seed, _base_name(base) if lora else None, precision,
               weights_fingerprint(base) if lora else None, ema_decay, compact)
    resumed_at: list[int] = []
    if (ckpt / "state.json").exists():
        start, loss_avg = _resume(ckpt, unet, text_encoder, opt, gen, dropped, run)
        resumed_at = json.loads((ckpt / "state.json").read_text()).get("resumed_at", [])
        if not (ckpt / "optimizer.safetensors").exists():  # a compact checkpoint: AdamW starts again, warmed up
            resumed_at = [*resumed_at, start]
    ema = None
    if ema_decay is not None:
        ema = _ema_init(unet, text_encoder)
        if start > 0 and (ckpt / "ema_unet.safetensors").exists():  # the run's own averages, where it resumes
            from safetensors.torch import load_file

            for name in ema:
                ema[name] = {k: v.float() for k, v in
                             load_file(ckpt / f"ema_{name}.safetensors", device=str(device)).items()}
        ema_pairs = _ema_pairs(ema, unet, text_encoder)
    items.ids, latents, abar = items.ids.to(device), latents.to(device), abar.to(device)
    unet.train()
    text_encoder.train()
    bar = tqdm(total=steps, initial=start, desc="train testbed", disable=not progress)
    losses = []
    for step in range(start, steps):
        warm = min(1.0, (step - resumed_at[-1] + 1) / RESUME_WARMUP_STEPS) if resumed_at else 1.0
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, lr_decay_steps) * warm
        with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "float32"):
            pred, target = _step_predictions(unet, text_encoder, items, latents, abar, gen, batch_size=batch_size,
                                             dropout=dropout, dropout_duplicated=dropout_duplicated,
                                             mitigate_threshold=mitigate_threshold, dropped=dropped)
        opt.zero_grad(set_to_none=True)
        if len(pred):
            loss = torch.nn.functional.mse_loss(pred.float(), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if ema is not None:
            _ema_step(ema_pairs, ema_decay)
        bar.update(1)
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        # the snapshot first: a stop between the two resumes before it, never past it
        if snapshot_every and (step + 1) % snapshot_every == 0:
            _save_evaluated(out / "snapshots" / f"step-{step + 1}", unet, text_encoder, run, ema=ema, step=step + 1,
                            loss=float(np.mean(losses[-50:])))
            unet.train()
            text_encoder.train()
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            loss_avg = float(np.mean(losses[-50:]))
            _save_checkpoint(ckpt, unet, text_encoder, opt, gen, step + 1, loss_avg,
                             {"mitigate_threshold": mitigate_threshold, "dropped": dropped, "data": data.settings,
                              **({"lr_schedule": {"steps": steps, "lr_decay_steps": lr_decay_steps}}
                                 if lr_decay_steps else {}),
                              **({"dropout_duplicated": dropout_duplicated} if dropout_duplicated != dropout else {}),
                              **({"precision": precision} if precision != "float32" else {}),
                              **({"ema_decay": ema_decay} if ema_decay is not None else {}),
                              **({"resumed_at": resumed_at} if resumed_at else {}),
                              **({"compact": True} if compact else {}),
                              **({"base_fingerprint": run.base_fingerprint} if run.base_fingerprint else {})},
                             ema=ema, compact=compact)
    bar.close()
    state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").exists() else {"step": start, "loss": loss_avg}
    mitigation = None
    if mitigate_threshold is not None:
        mitigation = {"method": "guidance_norm_filter", "threshold": mitigate_threshold,
                      "samples_left_out": state.get("dropped", dropped), "samples_drawn": state["step"] * batch_size}
    run.resumed_at = state.get("resumed_at", [])
    _save_evaluated(out, unet, text_encoder, run, ema=ema, step=state["step"], loss=state["loss"], mitigation=mitigation)
    return out


def _networks(regime: str, base, seed: int, sample_size: int, ckpt: Path):
    """``(unet, text_encoder, tokenizer, architecture)`` a run trains: new networks of the regime's architecture (the
    tokenizer saved in the checkpoint), or a fine-tune's base with LoRA adapters."""
    lora = REGIMES[regime].get("lora")
    if lora:
        return _lora_components(base, lora, seed)
    arch = {**ARCHITECTURE, **REGIMES[regime].get("architecture", {}), "sample_size": sample_size}
    tokenizer = build_tokenizer(ckpt / "vocab", words=DIGITS + THICKNESS)
    tokenizer.model_max_length = arch["max_length"]
    unet, text_encoder = _components(len(tokenizer), seed, arch)
    return unet, text_encoder, tokenizer, arch


def _check_arguments(regime, steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold, snapshot_every,
                     base, precision):
    """The training arguments checked, and the regime's defaults filled in, before anything is written."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    spec = REGIMES[regime]
    if spec.get("lora") and (base is None or not (Path(base) / "testbed.json").is_file()):
        raise ValueError(f"regime {regime!r} fine-tunes a trained testbed: base must be a testbed folder (holding "
                         f"testbed.json), got {base!r}")
    if base is not None and not spec.get("lora"):
        raise ValueError(f"base is only for a fine-tune regime ({[k for k, v in REGIMES.items() if v.get('lora')]}), "
                         f"not {regime!r}")
    lr = float(spec.get("lora", {}).get("lr", 1e-3) if lr is None else lr)
    dropout = float(spec.get("dropout", 0.1) if dropout is None else dropout)
    if mitigate_threshold is not None:
        mitigate_threshold = float(mitigate_threshold)
        if not math.isfinite(mitigate_threshold) or mitigate_threshold <= 0:
            raise ValueError(f"mitigate_threshold must be a positive number (a guidance-gap norm), got {mitigate_threshold}")
    steps = REGIMES[regime]["steps"] if steps is None else steps
    if dropout_duplicated is None:
        dropout_duplicated = REGIMES[regime].get("dropout_duplicated", dropout)
    if lr_decay_steps is None:
        lr_decay_steps = REGIMES[regime].get("lr_decay_steps", 0)
    if isinstance(lr_decay_steps, bool) or not isinstance(lr_decay_steps, int) or not 0 <= lr_decay_steps <= steps:
        raise ValueError(f"lr_decay_steps must be an integer in [0, steps={steps}], got {lr_decay_steps!r}")
    for name, p in (("dropout", dropout), ("dropout_duplicated", dropout_duplicated)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    if snapshot_every is not None and (isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int)
                                       or snapshot_every <= 0):
        raise ValueError(f"snapshot_every must be a positive number of steps, got {snapshot_every!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold


