"""Training the testbed: seeded, resumable from safetensors checkpoints, saved in the Stable Diffusion layout."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass, field
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
from .items import MITIGATION_RULES, _GapWindow, _step_predictions, _TrainingItems
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
    s = _check_arguments((settings or TrainingSettings()).given(**options), Path(out_dir))
    out = Path(out_dir)
    _clear_for_run(out, overwrite)
    device = torch.device(device)
    data = data if data is not None else build_canvas_data(seed=s.seed, **REGIMES[s.regime]["data"])
    t = _start(out / "checkpoint", s, data, device)
    _train_steps(t, s, out, progress)
    state = json.loads((t.ckpt / "state.json").read_text()) if (t.ckpt / "state.json").exists() \
        else {"step": t.start, "loss": t.loss_avg}
    mitigation = _mitigation_record(s, state.get("dropped", t.dropped), state["step"])
    t.run.resumed_at = state.get("resumed_at", [])
    _save_evaluated(out, t.unet, t.text_encoder, t.run, ema=t.ema, step=state["step"], loss=state["loss"],
                    mitigation=mitigation)
    return out


def _mitigation_record(s: TrainingSettings, dropped: dict, step: int) -> dict | None:
    """What ``testbed.json`` records of training-time mitigation at ``step`` (None without it): the filter, its
    threshold or rule, and the samples left out of those drawn."""
    if s.mitigate_threshold is None and s.mitigate_rule is None:
        return None
    threshold = ({"threshold": s.mitigate_threshold} if s.mitigate_rule is None
                 else {"rule": s.mitigate_rule, **MITIGATION_RULES[s.mitigate_rule]})
    return {"method": "guidance_norm_filter", **threshold, "samples_left_out": dict(dropped),
            "samples_drawn": step * s.batch_size}


@dataclass
class _Training:
    """What a run holds while it trains: networks, optimizer, generator, data on the device, and where it stands."""

    ckpt: Path
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    items: _TrainingItems
    latents: torch.Tensor
    abar: torch.Tensor
    run: _Run
    data: CanvasData
    device: torch.device
    start: int = 0
    loss_avg: float = float("nan")
    resumed_at: list = field(default_factory=list)
    dropped: dict = field(default_factory=lambda: {"duplicated": 0, "single": 0, "unconditional": 0})
    ema: dict | None = None
    ema_pairs: list | None = None
    window: _GapWindow | None = None


def _clear_for_run(out: Path, overwrite: bool) -> None:
    """Finish or undo an interrupted save, refuse a folder holding another model (before anything is written), and
    under ``overwrite`` remove what marks the folder's old run first, so that a stop never leaves a mixed folder."""
    from .folder import check_model_output

    ckpt = out / "checkpoint"
    recover_checkpoint(ckpt)
    check_model_output(out, overwrite=overwrite)
    if overwrite:
        for old in (ckpt, out / "snapshots"):
            if old.is_dir():
                shutil.rmtree(old)
        (out / "testbed.json").unlink(missing_ok=True)


def _start(ckpt: Path, s: TrainingSettings, data: CanvasData, device: torch.device) -> _Training:
    """The run's networks, optimizer and generator, new or resumed from ``ckpt`` (with its weight averages)."""
    from .folder import weights_fingerprint

    lora = REGIMES[s.regime].get("lora")
    latents = to_latents(data.images)
    ckpt.mkdir(parents=True, exist_ok=True)
    unet, text_encoder, tokenizer, arch = _networks(s.regime, s.base, s.seed, latents.shape[-1], ckpt)
    schedule = sd_scheduler("epsilon")
    items = _TrainingItems.of(data, tokenizer, arch["max_length"])
    run = _Run(data, tokenizer, schedule, arch, s.steps, s.batch_size, s.lr, s.lr_decay_steps, s.dropout,
               s.dropout_duplicated, s.mitigate_threshold, s.seed, _base_name(s.base) if lora else None, s.precision,
               weights_fingerprint(s.base) if lora else None, s.ema_decay, s.compact, mitigate_rule=s.mitigate_rule)
    t = _Training(ckpt, unet, text_encoder, prepare_training(unet, text_encoder, lr=s.lr, device=device),
                  torch.Generator().manual_seed(s.seed), items, latents, schedule.alphas_cumprod.float(), run, data,
                  device)
    if (ckpt / "state.json").exists():
        t.start, t.loss_avg = _resume(ckpt, unet, text_encoder, t.opt, t.gen, t.dropped, run)
        t.resumed_at = json.loads((ckpt / "state.json").read_text()).get("resumed_at", [])
        if not (ckpt / "optimizer.safetensors").exists():  # a compact checkpoint: AdamW starts again, warmed up
            t.resumed_at = [*t.resumed_at, t.start]
    if s.mitigate_rule is not None:
        t.window = _GapWindow(s.mitigate_rule, s.batch_size, len(schedule.alphas_cumprod))
        if t.start > 0:  # the fence's window as the run left it
            from safetensors.torch import load_file

            t.window.load(load_file(ckpt / "gap_window.safetensors"), t.start)
    if s.ema_decay is not None:
        t.ema = _ema_init(unet, text_encoder)
        if t.start > 0 and (ckpt / "ema_unet.safetensors").exists():  # the run's own averages, where it resumes
            from safetensors.torch import load_file

            for name in t.ema:
                t.ema[name] = {k: v.float() for k, v in
                               load_file(ckpt / f"ema_{name}.safetensors", device=str(device)).items()}
        t.ema_pairs = _ema_pairs(t.ema, unet, text_encoder)
    t.items.ids, t.latents, t.abar = t.items.ids.to(device), t.latents.to(device), t.abar.to(device)
    return t


def _train_steps(t: _Training, s: TrainingSettings, out: Path, progress: bool) -> None:
    """The loop from where the run stands to its final step: snapshots and checkpoints as the settings say."""
    from tqdm.auto import tqdm

    t.unet.train()
    t.text_encoder.train()
    bar = tqdm(total=s.steps, initial=t.start, desc="train testbed", disable=not progress)
    losses = []
    for step in range(t.start, s.steps):
        warm = min(1.0, (step - t.resumed_at[-1] + 1) / RESUME_WARMUP_STEPS) if t.resumed_at else 1.0
        for group in t.opt.param_groups:
            group["lr"] = learning_rate(step, s.steps, s.lr, s.lr_decay_steps) * warm
        with torch.autocast(t.device.type, dtype=PRECISIONS[s.precision], enabled=s.precision != "float32"):
            pred, target = _step_predictions(t.unet, t.text_encoder, t.items, t.latents, t.abar, t.gen, s, t.dropped,
                                             t.window)
        t.opt.zero_grad(set_to_none=True)
        if len(pred):
            loss = torch.nn.functional.mse_loss(pred.float(), target)
            loss.backward()
            t.opt.step()
            losses.append(loss.item())
        if t.ema is not None:
            _ema_step(t.ema_pairs, s.ema_decay)
        bar.update(1)
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        # the snapshot first: a stop between the two resumes before it, never past it
        if s.snapshot_every and (step + 1) % s.snapshot_every == 0:
            _save_evaluated(out / "snapshots" / f"step-{step + 1}", t.unet, t.text_encoder, t.run, ema=t.ema,
                            step=step + 1, loss=float(np.mean(losses[-50:])),
                            mitigation=_mitigation_record(s, t.dropped, step + 1))
            t.unet.train()
            t.text_encoder.train()
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
            t.loss_avg = float(np.mean(losses[-50:]))
            _save_checkpoint(t.ckpt, t.unet, t.text_encoder, t.opt, t.gen,
                             {"step": step + 1, "loss": t.loss_avg, **_state_extras(t, s)},
                             ema=t.ema, compact=s.compact, more={"gap_window": t.window.state()} if t.window else None)
    bar.close()


def _state_extras(t: _Training, s: TrainingSettings) -> dict:
    """What a checkpoint's state.json records beside its step and loss (only what differs from the defaults)."""
    return {"mitigate_threshold": s.mitigate_threshold, "dropped": t.dropped, "data": t.data.settings,
            **({"lr_schedule": {"steps": s.steps, "lr_decay_steps": s.lr_decay_steps}} if s.lr_decay_steps else {}),
            **({"dropout_duplicated": s.dropout_duplicated} if s.dropout_duplicated != s.dropout else {}),
            **({"precision": s.precision} if s.precision != "float32" else {}),
            **({"ema_decay": s.ema_decay} if s.ema_decay is not None else {}),
            **({"resumed_at": t.resumed_at} if t.resumed_at else {}),
            **({"compact": True} if s.compact else {}),
            **({"mitigate_rule": s.mitigate_rule, "mitigate_rule_settings": MITIGATION_RULES[s.mitigate_rule]}
               if s.mitigate_rule else {}),
            **({"base_fingerprint": t.run.base_fingerprint} if t.run.base_fingerprint else {})}


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


def _check_arguments(s: TrainingSettings, out: Path) -> TrainingSettings:
    """The training settings checked, and the regime's defaults filled in, before anything is written."""
    if s.regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {s.regime!r}")
    spec = REGIMES[s.regime]
    if spec.get("lora") and (s.base is None or not (Path(s.base) / "testbed.json").is_file()):
        raise ValueError(f"regime {s.regime!r} fine-tunes a trained testbed: base must be a testbed folder (holding "
                         f"testbed.json), got {s.base!r}")
    if s.base is not None and not spec.get("lora"):
        raise ValueError(f"base is only for a fine-tune regime ({[k for k, v in REGIMES.items() if v.get('lora')]}), "
                         f"not {s.regime!r}")
    lr = float(spec.get("lora", {}).get("lr", 1e-3) if s.lr is None else s.lr)
    dropout = float(spec.get("dropout", 0.1) if s.dropout is None else s.dropout)
    mitigate_threshold = s.mitigate_threshold
    if mitigate_threshold is not None:
        mitigate_threshold = float(mitigate_threshold)
        if not math.isfinite(mitigate_threshold) or mitigate_threshold <= 0:
            raise ValueError(f"mitigate_threshold must be a positive number (a guidance-gap norm), got {mitigate_threshold}")
    if s.mitigate_rule is not None and (s.mitigate_rule not in MITIGATION_RULES or mitigate_threshold is not None):
        raise ValueError(f"mitigate_rule must be one of {sorted(MITIGATION_RULES)}, without mitigate_threshold beside "
                         f"it, got {s.mitigate_rule!r}" + (f" and mitigate_threshold={mitigate_threshold}"
                                                            if mitigate_threshold is not None else ""))
    steps = spec["steps"] if s.steps is None else s.steps
    dropout_duplicated = spec.get("dropout_duplicated", dropout) if s.dropout_duplicated is None else s.dropout_duplicated
    lr_decay_steps = spec.get("lr_decay_steps", 0) if s.lr_decay_steps is None else s.lr_decay_steps
    if isinstance(lr_decay_steps, bool) or not isinstance(lr_decay_steps, int) or not 0 <= lr_decay_steps <= steps:
        raise ValueError(f"lr_decay_steps must be an integer in [0, steps={steps}], got {lr_decay_steps!r}")
    for name, p in (("dropout", dropout), ("dropout_duplicated", dropout_duplicated)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    if s.snapshot_every is not None and (isinstance(s.snapshot_every, bool) or not isinstance(s.snapshot_every, int)
                                         or s.snapshot_every <= 0):
        raise ValueError(f"snapshot_every must be a positive number of steps, got {s.snapshot_every!r}")
    if s.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {s.precision!r}")
    if s.ema_decay is not None and (isinstance(s.ema_decay, bool) or not 0.0 < float(s.ema_decay) < 1.0):
        raise ValueError(f"ema_decay must lie in (0, 1), got {s.ema_decay!r}")
    if s.compact and spec.get("lora"):
        raise ValueError("compact checkpoints are for networks trained from scratch, not a fine-tune (its frozen base "
                         "would be rounded to half precision)")
    if s.base is not None and out.resolve() == Path(s.base).resolve():
        raise ValueError(f"out_dir {str(out)!r} is the fine-tune's base: give another folder")
    return dataclasses.replace(s, steps=steps, lr=lr, dropout=dropout, dropout_duplicated=dropout_duplicated,
                               lr_decay_steps=lr_decay_steps, mitigate_threshold=mitigate_threshold)
