"""A training run's checkpoint: full (weights, AdamW's state, the data generator's state; resumed bit for bit) or
compact (weights and their averages in half precision, the generator's state; AdamW restarted with a warm-up), and
the weight average (EMA) a benchmark protocol evaluates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._util import atomic_write_text
from .regimes import learning_rate

if TYPE_CHECKING:
    from .export import _Run

__all__ = ["RESUME_WARMUP_STEPS", "recover_checkpoint"]


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


def _save_checkpoint(ckpt: Path, unet, text_encoder, opt, gen, state: dict, *, ema=None, compact: bool = False,
                     more: dict | None = None) -> None:
    """Model, optimizer and generator state as safetensors, ``state.json`` last, written whole: into
    ``checkpoint.new/`` first, then swapped in for the old one (:func:`recover_checkpoint` finishes a swap a stop
    interrupted), so a checkpoint never mixes files of two steps. ``state``: what ``state.json`` records (the step,
    the loss and the run's settings).

    ``compact``: weights only (the networks and their averages ``ema``), in half precision, and the generator state:
    about a quarter of a full checkpoint, which keeps AdamW's moments too (:func:`_resume`). ``more``: further
    ``{name: tensors}`` the run needs to resume as it was (training-time mitigation's gap window), each a file."""
    from safetensors.torch import save_file

    if compact:
        tensors = {"unet": _half(unet), "text_encoder": _half(text_encoder)}
        if ema is not None:
            tensors.update({"ema_unet": _half(ema["unet"]), "ema_text_encoder": _half(ema["text_encoder"])})
    else:
        tensors = {"unet": {k: v.contiguous() for k, v in unet.state_dict().items()},
                   "text_encoder": {k: v.contiguous() for k, v in text_encoder.state_dict().items()},
                   "optimizer": _flatten_optimizer(opt)}
        if ema is not None:
            tensors.update({f"ema_{k}": {n: t.contiguous() for n, t in v.items()} for k, v in ema.items()})
    tensors["rng"] = {"generator": gen.get_state()}
    tensors.update(more or {})
    new, old = _siblings(ckpt)
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    if (ckpt / "vocab").is_dir():  # the tokenizer's files, written once when the run began
        shutil.copytree(ckpt / "vocab", new / "vocab")
    for name, t in tensors.items():
        save_file(t, new / f"{name}.safetensors")
    atomic_write_text(new / "state.json", json.dumps(state))
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    new.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _siblings(ckpt: Path) -> tuple[Path, Path]:
    return ckpt.with_name(ckpt.name + ".new"), ckpt.with_name(ckpt.name + ".old")


def recover_checkpoint(ckpt: Path) -> None:
    """Finish a checkpoint swap that a stop interrupted (:func:`_save_checkpoint`): a whole new checkpoint
    (``state.json`` written) takes the place of a missing one, else the old one comes back; a partial new one is
    dropped. Nothing is lost: only a complete checkpoint is ever moved into place."""
    new, old = _siblings(Path(ckpt))
    if (ckpt / "state.json").is_file():  # the swap finished (or never began): leftovers go
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        return
    for whole in (new, old):
        if (whole / "state.json").is_file():
            shutil.rmtree(ckpt, ignore_errors=True)  # a folder without state.json holds no checkpoint
            whole.rename(ckpt)
            break
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _resume(ckpt: Path, unet, text_encoder, opt, gen, dropped: dict, run: _Run) -> tuple[int, float]:
    """Load the checkpoint in ``ckpt`` into the networks, optimizer and generator, after checking that it was
    trained with the same settings; returns its step and loss."""
    from safetensors.torch import load_file

    data, lr, steps, lr_decay_steps = run.data, run.lr, run.steps, run.lr_decay_steps
    dropout, dropout_duplicated, mitigate_threshold = run.dropout, run.dropout_duplicated, run.mitigate_threshold

    meta = json.loads((ckpt / "state.json").read_text())
    if meta.get("mitigate_rule") != run.mitigate_rule:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with mitigate_rule={meta.get('mitigate_rule')!r}, "
                         f"not {run.mitigate_rule!r}: resume it with the same setting, or train into another folder")
    if run.mitigate_rule is not None:
        from .items import MITIGATION_RULES

        if meta.get("mitigate_rule_settings") != MITIGATION_RULES[run.mitigate_rule]:
            raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with mitigate_rule {run.mitigate_rule!r} "
                             f"set as {meta.get('mitigate_rule_settings')}, not {MITIGATION_RULES[run.mitigate_rule]}: "
                             "resume it under the same rule, or train into another folder")
    if meta.get("mitigate_threshold") != mitigate_threshold:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with mitigate_threshold="
                         f"{meta.get('mitigate_threshold')}, not {mitigate_threshold}: resume it with the same "
                         "setting, or train into another folder")
    if meta.get("dropout_duplicated", dropout) != dropout_duplicated:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with dropout_duplicated="
                         f"{meta.get('dropout_duplicated', dropout)}, not {dropout_duplicated}: resume it with the "
                         "same regime, or train into another folder")
    if "compact" in meta and meta["compact"] != run.compact:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} is {'compact' if meta['compact'] else 'full'}: resume it with "
                         "the same compact setting, or train into another folder")
    if meta.get("base_fingerprint", run.base_fingerprint) != run.base_fingerprint:
        raise ValueError(f"the checkpoint in {str(ckpt)!r} fine-tunes a base whose UNet SHA-256 is "
                         f"{str(meta['base_fingerprint'])[:16]}..., not {str(run.base_fingerprint)[:16]}...: resume it on "
                         "its own base, or train into another folder")
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
