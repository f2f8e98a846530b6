"""Training the testbed: seeded, resumable from safetensors checkpoints, saved in the Stable Diffusion layout."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._util import atomic_replace, atomic_write_text
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
    ladder_from_shares,
    to_latents,
)

__all__ = ["ARCHITECTURE", "REGIMES", "SD_SHARES", "SD_LADDER_SHARES", "SD_LOCAL_LADDER_SHARES", "SD_GRADED_LADDER_SHARES", "SD_SHARED_LADDER_SHARES", "SD_SHARED_COMPANIONS", "PRECISIONS", "train_testbed", "prepare_training", "learning_rate"]


#: Architecture of the testbed's networks (recorded in ``testbed.json``).
ARCHITECTURE = {"unet_channels": (64, 128), "text_dim": 64, "text_layers": 2, "max_length": 32}


def _flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = v.contiguous() if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        if v.shape == params[int(i)].shape and v.dim() > 1:  # moments in their parameter's memory format
            v = torch.empty_like(params[int(i)]).copy_(v)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _components(tokenizer_len: int, seed: int, arch: dict):

    with float32_default():
        text_encoder = build_text_encoder(tokenizer_len, hidden_size=arch["text_dim"], layers=arch["text_layers"], seed=seed)
        unet = build_unet(in_channels=4, sample_size=arch["sample_size"], cross_attention_dim=arch["text_dim"],
                          block_out_channels=arch["unet_channels"], seed=seed)
    return unet, text_encoder


#: Learning-rate warm-up (steps) after a run resumes from a compact checkpoint, whose AdamW moments start again at 0.
RESUME_WARMUP_STEPS = 200


def _half(module_or_state) -> dict[str, torch.Tensor]:
    """A state dict in half precision (floating tensors only), contiguous, for a compact checkpoint."""
    state = module_or_state if isinstance(module_or_state, dict) else module_or_state.state_dict()
    return {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}


def _ema_init(unet, text_encoder) -> dict:
    """Averaged copies of the networks' state (float32), starting at their current weights."""
    return {name: {k: v.detach().clone().float() for k, v in net.state_dict().items()}
            for name, net in (("unet", unet), ("text_encoder", text_encoder))}


def _ema_pairs(ema: dict, unet, text_encoder) -> tuple[list, list, list, list]:
    """``(averages, weights)`` of the floating tensors and ``(copies, sources)`` of the others, for :func:`_ema_step`
    (the state dict's tensors share the parameters' memory, so the pairs stay valid while the optimizer steps)."""
    fa, fw, oa, ow = [], [], [], []
    for name, net in (("unet", unet), ("text_encoder", text_encoder)):
        for k, v in net.state_dict().items():
            (fa if v.is_floating_point() else oa).append(ema[name][k])
            (fw if v.is_floating_point() else ow).append(v)
    return fa, fw, oa, ow


@torch.no_grad()
def _ema_step(pairs, decay: float) -> None:
    """``ema <- decay ema + (1 - decay) w`` for every floating tensor; the others copied."""
    fa, fw, oa, ow = pairs
    torch._foreach_lerp_(fa, [w.float() for w in fw], 1.0 - decay)
    for a, w in zip(oa, ow):
        a.copy_(w)


def _save_checkpoint(ckpt: Path, unet, text_encoder, opt, gen, step: int, loss: float, extra: dict | None = None,
                     *, ema=None, compact: bool = False) -> None:
    """Model, optimizer and generator state as safetensors; ``state.json`` last, each file atomically.

    ``compact``: weights only (the networks and their averages ``ema``), in half precision, and the generator state:
    about a quarter of a full checkpoint, which keeps AdamW's moments too (:func:`_resume`)."""
    from safetensors.torch import save_file

    if compact:
        tensors = {"unet": _half(unet), "text_encoder": _half(text_encoder)}
        if ema is not None:
            tensors.update({"ema_unet": _half(ema["unet"]), "ema_text_encoder": _half(ema["text_encoder"])})
        for stale in ("optimizer.safetensors", *(() if ema is not None else ("ema_unet.safetensors",
                                                                              "ema_text_encoder.safetensors"))):
            (ckpt / stale).unlink(missing_ok=True)  # one checkpoint, one format
    else:
        tensors = {"unet": {k: v.contiguous() for k, v in unet.state_dict().items()},
                   "text_encoder": {k: v.contiguous() for k, v in text_encoder.state_dict().items()},
                   "optimizer": _flatten_optimizer(opt)}
        if ema is not None:
            tensors.update({f"ema_{k}": {n: t.contiguous() for n, t in v.items()} for k, v in ema.items()})
    tensors["rng"] = {"generator": gen.get_state()}
    for name, t in tensors.items():
        atomic_replace(lambda tmp, t=t: save_file(t, tmp), ckpt / f"{name}.safetensors")
    atomic_write_text(ckpt / "state.json", json.dumps({"step": step, "loss": loss, **(extra or {})}))


#: Shares of the training draws per duplicated image in the SD regime (0.003 is 0.3%), per kind: a ladder reaching
#: 0.4% (matching, local) and 0.3% per image (template, two canvases per caption), down to 0.075%. Copying in this
#: regime needs share as well as views: a duplicate at 0.071% of the draws did not move towards its image from 183 to
#: 1,324 views, one at 0.25-0.29% began to by about 1,300 (benchmarks/results/sd_regime_sweep.md).
SD_SHARES = {"matching": (0.004, 0.0035, 0.003, 0.003, 0.0015, 0.00075),
             "template": (0.003, 0.003, 0.0015, 0.00075),
             "local": (0.004, 0.0035, 0.003, 0.003, 0.0015, 0.00075)}

#: The second SD-regime ladder: more duplicated prompts per kind between 0.1% and 0.5% of the draws per image, where
#: the first run's (SD_SHARES) began to copy at 24,000 steps (matching and template from 0.15%, none at 0.075%), so that
#: each kind can give four memorized prompts and the rungs near 0.1-0.15% graded ones; duplicated items 4.9% of the draws.
SD_LADDER_SHARES = {"matching": (0.004, 0.003, 0.0025, 0.002, 0.002, 0.0015, 0.0015, 0.001),
                    "template": (0.003, 0.002, 0.0015, 0.0015, 0.001),
                    "local": (0.005, 0.004, 0.0025, 0.002)}

#: The third SD-regime ladder, for local memorization: on the second ladder's causal twin (duplicates never dropped)
#: matching and template prompts copied from 0.1% of the draws per image by 16,000 steps, while no local cell crossed
#: 1/3 from 0.2-0.5% (benchmarks/results/sd_ladder_cond_only_share_sweep.md). So the matching and template rungs go
#: down to 0.075% (each kind still reaching 0.3%) and the local cells take the budget left, 0.5-0.9%; duplicated items
#: 4.9% of the draws.
SD_LOCAL_LADDER_SHARES = {"matching": (0.003, 0.002, 0.0015, 0.001, 0.00075),
                          "template": (0.003, 0.0015, 0.001, 0.00075),
                          "local": (0.009, 0.008, 0.006, 0.005)}

#: The fourth SD-regime ladder, for graded memorization (R4: six prompts copying at some seeds and not others), under the
#: twin's rule. On the twin and the third ladder each rung went from no copy to every seed within 2,000-4,000 steps,
#: crossing later the smaller its share (0.3% by 10,000 steps, 0.1% by 12,000-16,000) and the 0.075% rungs copying
#: at every seed by 24,000 (benchmarks/results/sd_ladder_local_share_sweep.md); so besides three rungs per kind that
#: copy (0.1-0.3%), five matching and three template rungs sit close together at 0.05-0.07%, where the last snapshots
#: should find them in transition. The local cells copy by the replication level from 0.6% of the draws and by the
#: verbatim rule at no share tried, so four sit at 0.6-0.7%; duplicated items 4.9% of the draws.
SD_GRADED_LADDER_SHARES = {"matching": (0.003, 0.0015, 0.001, 0.0007, 0.00065, 0.0006, 0.00055, 0.0005),
                           "template": (0.003, 0.0015, 0.001, 0.00065, 0.00055, 0.0005),
                           "local": (0.007, 0.0065, 0.006, 0.006)}


#: The fifth SD-regime ladder, for graded memorization by a shared caption. On the fourth ladder a prompt's copy rate
#: was nearly 0 or 1 at every snapshot, each rung crossing within 2,000-4,000 steps, so graded prompts were those caught
#: mid-crossing (at most 6, twice in 68 readings). A caption that labels its duplicated image and other images too
#: mixes the duplicate with them in the prompt's conditional distribution, a mixture whose weight does not change as
#: training goes on (both are drawn at fixed shares). So eight matching rungs at 0.09% share their caption with 6-330
#: single canvases (SD_SHARED_COMPANIONS; the duplicate is 49 singles' views, so from 0.89 to 0.13 of its caption's
#: draws), beside four plain rungs per kind (0.1-0.3%) and local cells at 0.6% (where the fourth ladder's replicated);
#: duplicated items 4.9% of the draws. Measured: the rates did not follow the mix (a rung at 0.43 of its caption copied
#: at every seed, ones at 0.89 never); R1-R4 held by the replication level at 20,000 steps, the 14 rungs at 0.09-0.1%
#: crossing together (benchmarks/results/sd_ladder_shared_share_sweep.md).
SD_SHARED_LADDER_SHARES = {"matching": (0.003, 0.001, 0.001, 0.001) + (0.0009,) * 8,
                           "template": (0.003, 0.001, 0.001, 0.001),
                           "local": (0.006, 0.006, 0.006, 0.006)}
SD_SHARED_COMPANIONS = {"matching": (0, 0, 0, 0, 6, 12, 22, 38, 65, 110, 190, 330),
                        "template": (0, 0, 0, 0), "local": (0, 0, 0, 0)}


def _sd_regime(shares: dict, companions: dict | None = None) -> dict:
    """An SD-regime entry of :data:`REGIMES`: 50,000 pixel-unique single canvases, each duplicated image at its share
    of the draws (``shares``, per kind), template prompts over two canvases, 24,000 steps, 16 token positions;
    ``companions``: canvases sharing each duplicated prompt's caption (:func:`build_canvas_data`), singles too."""
    n_single = 50000 + sum(sum(v) for v in (companions or {}).values())
    data = {"n_single": 50000, "ladder": ladder_from_shares(shares, n_single=n_single, n_variants=2),
            "n_variants": 2, "augment": True}
    return {"data": {**data, "companions": companions} if companions else data, "steps": 24000,
            "architecture": {"max_length": 16}}


def _protocol_regime(name: str) -> dict:
    """The :data:`REGIMES` entry of a benchmark protocol (:mod:`memgeo.testbed.protocol`): its data, final step and
    caption dropout, read from the protocol's file."""
    from .protocol import load_protocol

    proto = load_protocol(name)
    spec = _sd_regime({k: tuple(v) for k, v in proto["regime"]["shares"].items()})
    return {**spec, "steps": proto["training"]["steps"], "dropout_duplicated": proto["regime"]["dropout_duplicated"],
            "lr_decay_steps": proto["training"]["lr_decay_steps"]}


#: Training regimes, as data: the data builder's arguments, the default number of steps (batch 64), and where they
#: differ from :data:`ARCHITECTURE` the networks' settings.
REGIMES = {
    # the small-data testbed (benchmarks/results/small_data_testbed/), bit for bit: 2,272 distinct canvases seen about
    # 250 times each, duplicates 12% of items
    "small-data": {"data": {}, "steps": 10000},
    # Stable Diffusion's regime: 50,000 single canvases (every cell instance warped, so pixel-unique) seen about 29
    # times each in 24,000 steps; duplicated items 4.8% of the draws, each duplicated image on the SD_SHARES ladder
    # (0.3% of 24,000 x 64 draws is about 4,600 views). Captions fit 16 token positions.
    "sd": _sd_regime(SD_SHARES),
    # the SD regime with the second ladder (SD_LADDER_SHARES): the same 50,000 single compositions and captions (the
    # builder draws them first; their warps differ), 17 duplicated prompts instead of 16, more of them at the shares
    # where copying began
    "sd-ladder": _sd_regime(SD_LADDER_SHARES),
    # the second ladder, bit for bit (the same batches, noises and timesteps), except that a duplicated item's caption
    # is never dropped: its image is 0.1-0.5% of the captioned draws, which this budget needs for copying, but none of
    # the unconditional branch's, as a Stable Diffusion duplicate (about 1e-6 of LAION's draws) is almost none of its
    # unconditional model's. Where the second ladder's gap inverts mid-generation, its unconditional branch had learned
    # the copies too (benchmarks/results/sd_regime_commitment.md)
    "sd-ladder-cond-only": {**_sd_regime(SD_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the third ladder (SD_LOCAL_LADDER_SHARES) under the twin's rule (no duplicated caption ever dropped), which R1
    # needs: local cells at 0.5-0.9% of the draws
    "sd-ladder-local": {**_sd_regime(SD_LOCAL_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the fourth ladder (SD_GRADED_LADDER_SHARES) under the twin's rule: rungs clustered at 0.05-0.07% of the draws
    # for graded memorization, local cells at 0.6-0.7%
    "sd-ladder-graded": {**_sd_regime(SD_GRADED_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the fifth ladder (SD_SHARED_LADDER_SHARES) under the twin's rule: eight matching rungs share their caption with
    # single canvases (SD_SHARED_COMPANIONS), 14 rungs at 0.09-0.1% of the draws
    "sd-ladder-shared": {**_sd_regime(SD_SHARED_LADDER_SHARES, SD_SHARED_COMPANIONS), "dropout_duplicated": 0.0},
    # the benchmark protocol's regime (memgeo/testbed/protocols/sd-bench.json, fixed before its runs trained): 50,000
    # single canvases; 24 matching, 16 template and 12 local duplicated prompts on geometric share ladders from 0.02%
    # of the draws, duplicated items under 10%; no duplicated caption dropped (its uniform-dropout run drops them)
    "sd-bench": _protocol_regime("sd-bench"),
    # the first SD-regime attempt: 88,000 distinct canvases seen about 20 times each in 27,500 steps, duplicated items
    # capped at 2% (10 prompts per kind, 64 or 32 copies: 0.071% of the draws at most). Measured: no prompt copies at
    # 27,500 steps (benchmarks/results/sd_regime_sweep.md)
    "sd-capped": {"data": {"n_single": 88000, "n_per_kind": 10, "ladder": (64,) * 8 + (32,) * 2, "n_variants": 2,
                           "augment": True}, "steps": 27500},
    # a LoRA fine-tune of a trained testbed (``base=``), as people fine-tune Stable Diffusion on their own images: 800
    # new pixel-unique canvases (every cell instance warped) seen once per epoch, and on a ladder of 1 to 32 copies
    # 6 prompts of each kind; no caption dropout (diffusers' train_text_to_image_lora.py default); rank-16 adapters on
    # the UNet's attention projections and its resnets' convolutions (as LoCon-style adapters do), the base frozen.
    # Adapters on the attention projections alone (rank 8 and 16, up to 3,000 steps) copied nothing here
    # (benchmarks/results/finetune_regime.md)
    "finetune": {"data": {"n_single": 800, "n_per_kind": 6, "n_ordinary": 40, "n_heldout": 20, "augment": True},
                 "steps": 3000, "dropout": 0.0, "lora": {"rank": 16, "lr": 1e-3,
                                                          "targets": ("to_q", "to_k", "to_v", "to_out.0", "conv1",
                                                                      "conv2")}},
    # the causal test of the mechanism: the small-data regime, bit for bit, except that a duplicated item's
    # caption is never dropped, so the unconditional branch never sees a duplicated image
    "small-data-cond-only": {"data": {}, "steps": 10000, "dropout_duplicated": 0.0},
}


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


def learning_rate(step: int, steps: int, lr: float, decay_steps: int = 0) -> float:
    """The learning rate of training step ``step`` (0-based) of ``steps``: ``lr``, except over the last
    ``decay_steps`` steps, where it falls linearly towards 0 (``lr * (steps - step) / decay_steps``)."""
    start = steps - decay_steps
    return lr if decay_steps <= 0 or step < start else lr * (steps - step) / decay_steps


def train_testbed(
    out_dir: str | os.PathLike,
    *,
    regime: str = "small-data",
    steps: int | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    dropout: float | None = None,
    dropout_duplicated: float | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    snapshot_every: int | None = None,
    progress: bool = True,
    data: CanvasData | None = None,
    mitigate_threshold: float | None = None,
    lr_decay_steps: int | None = None,
    device: str | torch.device = "cpu",
    base: str | os.PathLike | None = None,
    precision: str = "float32",
    ema_decay: float | None = None,
    compact: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train the testbed (resumable from ``out_dir/checkpoint``) and save it in the SD layout.

    Checkpoints hold model, optimizer and random-generator state as safetensors (no pickles);
    a run that is stopped resumes at its last checkpoint and continues bit for bit. ``data``
    defaults to :func:`~memgeo.testbed.canvas.build_canvas_data` for ``seed`` under ``regime`` (a key of
    :data:`REGIMES`, which also gives the default ``steps``); its settings are recorded in
    ``testbed.json`` so that :func:`testbed_data` rebuilds it, and in the checkpoint, which refuses to
    resume on other data.

    ``lr`` (default: the regime's, else 1e-3) is AdamW's learning rate.

    ``precision``: ``"float32"``, or ``"bfloat16"`` for mixed precision (the forward passes under bfloat16 autocast;
    weights, gradients, loss and AdamW stay float32, as Stable Diffusion trains in mixed precision). The same batches,
    noises and timesteps are drawn either way. bfloat16 is faster only where the processor has bfloat16 arithmetic
    (AMX: 1.35x float32's samples per second on two cores, 1.54x on one; AVX512-BF16: 1.38-1.43x), 7x slower on AVX2
    alone; to 10,000 steps it memorized the same prompts as float32 (``benchmarks/results/training_speed.md``). A run
    resumes only in the precision it began in.

    ``base``: the trained testbed folder a fine-tune regime (one with ``"lora"`` in :data:`REGIMES`, ``"finetune"``)
    starts from. Its networks are frozen and LoRA adapters (peft, the regime's rank and target layers) are trained on
    the regime's data; ``out_dir`` then holds the adapter in diffusers' format (``pytorch_lora_weights.safetensors``,
    loaded by ``--lora`` through ``load_lora_weights``) and a ``testbed.json`` naming the base, so that
    :func:`~memgeo.testbed.load_testbed` loads base and adapter together.

    ``dropout``: the probability that an item's caption is replaced by the empty one (caption dropout, which
    trains the unconditional branch; default: the regime's, else 0.1); ``dropout_duplicated``: the same for the items of duplicated captions
    (default: the regime's, else ``dropout``). Both are compared with the same random draw, so runs that
    differ only there see the same batches, noises and timesteps: only the unconditional branch's exposure to
    the duplicates changes.

    ``lr_decay_steps``: the learning rate is ``lr`` until the last ``lr_decay_steps`` steps, then falls linearly
    towards 0 (:func:`learning_rate`; default: the regime's, else 0, a constant rate). A checkpoint resumes under a
    new schedule only where both gave it the same rates so far (for example a constant-rate run extended by a
    decay that starts where it stopped).

    ``snapshot_every``: every that many steps the model is also saved, loadable, in ``out_dir/snapshots/step-N``
    (the SD layout and ``testbed.json``), so that a long run can be measured while it trains.

    ``device``: where the networks train (``"cuda"`` on a GPU machine); batches, noise and timesteps are drawn
    on the CPU from one seeded generator whatever the device, so a run's data does not depend on it.

    ``overwrite``: ``out_dir`` may hold a trained model (or ground truth), replaced by a run trained from scratch;
    without it such a folder is refused before any work (:func:`~memgeo.testbed.folder.check_model_output`), unless
    it is this run's own checkpoint resuming and holds no ground truth.

    ``mitigate_threshold``: training-time mitigation (Wen et al., ICLR 2024). At every step the
    unconditional prediction of the batch is computed as well (one more forward pass, no
    gradient), and a sample whose guidance-gap norm ``|eps(x_t, t, caption) - eps(x_t, t, "")|``
    (L2 over the latent) is at least the threshold is left out of the loss. The batches drawn are
    the same as without mitigation (same seed, same generator), so the two runs differ only by
    the samples left out; how many were left out, of duplicated and of single captions, is
    recorded in ``testbed.json`` under ``"mitigation"``.
    """
    from tqdm.auto import tqdm

    from .folder import check_model_output, weights_fingerprint

    out = Path(out_dir)
    ckpt = out / "checkpoint"
    steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold = _check_arguments(
        regime, steps, lr, dropout, dropout_duplicated, lr_decay_steps, mitigate_threshold, snapshot_every, base,
        precision)
    if ema_decay is not None and (isinstance(ema_decay, bool) or not 0.0 < float(ema_decay) < 1.0):
        raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
    check_model_output(out, overwrite=overwrite)  # before anything is written
    if overwrite and ckpt.is_dir():
        shutil.rmtree(ckpt)  # trains from scratch
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
        if (ckpt / "ema_unet.safetensors").exists():
            from safetensors.torch import load_file

            for name in ema:
                ema[name] = {k: v.float() for k, v in load_file(ckpt / f"ema_{name}.safetensors").items()}
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
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            loss_avg = float(np.mean(losses[-50:]))
            _save_checkpoint(ckpt, unet, text_encoder, opt, gen, step + 1, loss_avg,
                             {"mitigate_threshold": mitigate_threshold, "dropped": dropped, "data": data.settings,
                              **({"lr_schedule": {"steps": steps, "lr_decay_steps": lr_decay_steps}}
                                 if lr_decay_steps else {}),
                              **({"dropout_duplicated": dropout_duplicated} if dropout_duplicated != dropout else {}),
                              **({"precision": precision} if precision != "float32" else {}),
                              **({"ema_decay": ema_decay} if ema_decay is not None else {}),
                              **({"resumed_at": resumed_at} if resumed_at else {})},
                             ema=ema, compact=compact)
        if snapshot_every and (step + 1) % snapshot_every == 0:
            _save_evaluated(out / "snapshots" / f"step-{step + 1}", unet, text_encoder, run, ema=ema, step=step + 1,
                            loss=float(np.mean(losses[-50:])))
            unet.train()
            text_encoder.train()
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


@dataclass
class _TrainingItems:
    """The training items as tensors: every caption's token ids (the empty one included), each item's image and
    caption index, whether its caption is duplicated, and the empty caption's index."""

    ids: torch.Tensor
    image: torch.Tensor
    caption: torch.Tensor
    duplicated: torch.Tensor
    empty: int

    @classmethod
    def of(cls, data, tokenizer, max_length: int) -> "_TrainingItems":
        captions = sorted({c for _, c in data.items} | {""})
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        if bool((ids[:, -1] != tokenizer.pad_token_id).any()):  # the end token would be cut off
            raise ValueError(f"a caption does not fit the text encoder's {max_length} token positions")
        index = {c: i for i, c in enumerate(captions)}
        # an item is duplicated when its image is the target of a prompt with more than one copy (not one of the
        # companions that share such a caption, which are singles)
        duplicated = {i for p in data.prompts if p["kind"] == "memorized" and p["duplication"] > 1 for i in p["targets"]}
        return cls(ids, torch.tensor([i for i, _ in data.items]), torch.tensor([index[c] for _, c in data.items]),
                   torch.tensor([i in duplicated for i, _ in data.items]), index[""])


def _step_predictions(unet, text_encoder, items: _TrainingItems, latents, abar, gen, *, batch_size: int,
                      dropout: float, dropout_duplicated: float, mitigate_threshold, dropped: dict):
    """One step's ``(prediction, target noise)``: a batch drawn from ``gen`` (items, caption dropout, timesteps and
    noise, in that order), noised, and predicted; under training-time mitigation the samples whose gap norm reaches
    the threshold are left out (counted in ``dropped``)."""
    device = latents.device
    j = torch.randint(len(items.image), (batch_size,), generator=gen)
    p_drop = torch.where(items.duplicated[j], dropout_duplicated, dropout)  # = dropout everywhere by default: same draws
    cap = torch.where(torch.rand(batch_size, generator=gen, dtype=torch.float32) < p_drop, items.empty, items.caption[j])
    t = torch.randint(0, len(abar), (batch_size,), generator=gen)
    noise = torch.randn((batch_size, *latents.shape[1:]), generator=gen, dtype=torch.float32).to(device)
    x0, t, cap_d = latents[items.image[j].to(device)], t.to(device), cap.to(device)
    a = abar[t].reshape(-1, 1, 1, 1)
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
    pred = unet(x_t, t, encoder_hidden_states=text_encoder(items.ids[cap_d])[0]).sample
    if mitigate_threshold is None:
        return pred, noise
    with torch.no_grad():
        uncond = unet(x_t, t, encoder_hidden_states=text_encoder(items.ids[[items.empty]])[0].expand(batch_size, -1, -1)).sample
        keep = ((pred.detach() - uncond).flatten(1).norm(dim=1) < mitigate_threshold).cpu()
    left = ~keep
    dropped["unconditional"] += int((left & (cap == items.empty)).sum())
    dropped["duplicated"] += int((left & (cap != items.empty) & items.duplicated[j]).sum())
    dropped["single"] += int((left & (cap != items.empty) & ~items.duplicated[j]).sum())
    return pred[keep.to(device)], noise[keep.to(device)]


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


def _base_name(base) -> str:
    """How ``testbed.json`` names a fine-tune's base: ``"embedded"`` for the shipped testbed, else its path."""
    from .folder import TESTBED_DIR

    return "embedded" if Path(base).resolve() == TESTBED_DIR.resolve() else str(Path(base).resolve())


def _lora_components(base, lora: dict, seed: int):
    """The base testbed's networks and tokenizer, frozen, with fresh LoRA adapters on the UNet (peft)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    with float32_default():
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", use_safetensors=True)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", use_safetensors=True)
        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)
        torch.manual_seed(seed)  # the adapters' initial weights
        unet.add_adapter(LoraConfig(r=lora["rank"], lora_alpha=lora["rank"], init_lora_weights="gaussian",
                                    target_modules=list(lora["targets"])))
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    arch = json.loads((Path(base) / "testbed.json").read_text())["architecture"]
    return unet, text_encoder, tokenizer, {**arch, "lora_rank": lora["rank"], "lora_targets": list(lora["targets"])}


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


def _resume(ckpt: Path, unet, text_encoder, opt, gen, dropped: dict, run: _Run) -> tuple[int, float]:
    """Load the checkpoint in ``ckpt`` into the networks, optimizer and generator, after checking that it was
    trained with the same settings; returns its step and loss."""
    from safetensors.torch import load_file

    data, lr, steps, lr_decay_steps = run.data, run.lr, run.steps, run.lr_decay_steps
    dropout, dropout_duplicated, mitigate_threshold = run.dropout, run.dropout_duplicated, run.mitigate_threshold

    meta = json.loads((ckpt / "state.json").read_text())
    if meta.get("mitigate_threshold") != mitigate_threshold:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with mitigate_threshold="
                         f"{meta.get('mitigate_threshold')}, not {mitigate_threshold}: resume it with the same "
                         "setting, or train into another folder")
    if meta.get("dropout_duplicated", dropout) != dropout_duplicated:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with dropout_duplicated="
                         f"{meta.get('dropout_duplicated', dropout)}, not {dropout_duplicated}: resume it with the "
                         "same regime, or train into another folder")
    if meta.get("ema_decay") != run.ema_decay:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with ema_decay={meta.get('ema_decay')}, not "
                         f"{run.ema_decay}: resume it with the same averaging, or train into another folder")
    if meta.get("precision", "float32") != run.precision:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained in precision={meta.get('precision', 'float32')!r}, "
                         f"not {run.precision!r}: resume it in the same precision, or train into another folder")
    if "data" in meta and meta["data"] != json.loads(json.dumps(data.settings)):
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained on other data ({meta['data']}, not "
                         f"{data.settings}): resume it with the same regime and seed, or train into another folder")
    start = int(meta["step"])
    was = meta.get("lr_schedule") or {"steps": start, "lr_decay_steps": 0}  # before: a constant rate
    if any(learning_rate(k, was["steps"], lr, was["lr_decay_steps"]) != learning_rate(k, steps, lr, lr_decay_steps)
           for k in range(start)):
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained under another learning-rate schedule "
                         f"({was}, not steps={steps}, lr_decay_steps={lr_decay_steps}): resume it with the same "
                         "steps and lr_decay_steps, or train into another folder")
    dropped.update(meta.get("dropped", {}))
    device = next(unet.parameters()).device
    for net, name in ((unet, "unet"), (text_encoder, "text_encoder")):  # a compact checkpoint's half precision too
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in load_file(ckpt / f"{name}.safetensors", device=str(device)).items()})
    if (ckpt / "optimizer.safetensors").exists():  # a full checkpoint; a compact one restarts AdamW (train_testbed)
        _restore_optimizer(opt, load_file(ckpt / "optimizer.safetensors", device=str(device)))
    gen.set_state(load_file(ckpt / "rng.safetensors")["generator"])
    return start, float(meta["loss"])


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
