"""The memorization testbed: a small text-to-image diffusion model trained here, with known memorized prompts.

Data (:mod:`memgeo.sd.canvas`): 16x16 canvases of four scikit-learn digits, folded
space-to-depth into ``4 x 8 x 8`` latents (256 numbers) so that, as in Stable Diffusion, each
position has a 4-channel vector. Every caption comes from one grammar (``"thin seven, thick two,
regular one, thin zero"``), memorized or not, so the text alone says nothing about memorization.
Duplication is graded (1 to 32 copies) and of three kinds: matching verbatim, template verbatim
and local (one region duplicated).

Model: a diffusers ``UNet2DConditionModel`` conditioned through a small ``CLIPTextModel`` (trained
jointly) on a ``CLIPTokenizer`` whose vocabulary has the grammar's words as single tokens and every
byte as a fallback; 10% prompt dropout for classifier-free guidance; Stable Diffusion's
scaled-linear schedule with epsilon prediction. It is saved in the Stable Diffusion folder layout
(no VAE: the latents are the images) and loaded by
:meth:`~memgeo.sd.DiffusersScoreModel.from_pretrained`, exactly as SD is.

Ground truth is measured by generation (:func:`memorization_ground_truth`): a generation copies a
training canvas when each of its four 8x8 cells is nearest to, and within the copy threshold of,
that canvas's digit image at the same position.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .canvas import DIGITS, THICKNESS, CanvasData, build_canvas_data, canvas_cells

__all__ = [
    "TESTBED_DIR",
    "TestbedData",
    "build_testbed_data",
    "train_testbed",
    "load_testbed",
    "testbed_metadata",
    "testbed_data",
    "to_images",
    "to_latents",
    "memorization_ground_truth",
    "generation_copies",
    "copied_cells",
]

TESTBED_DIR = Path(__file__).resolve().parent / "testbed_weights"
TestbedData = CanvasData
#: Architecture of the testbed's networks (recorded in ``testbed.json``).
ARCHITECTURE = {"unet_channels": (64, 128), "text_dim": 64, "text_layers": 2, "max_length": 32}


def to_latents(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` images -> ``[N, 4, H/2, W/2]`` latents (space-to-depth, a coordinate permutation)."""
    return torch.nn.functional.pixel_unshuffle(images.reshape(len(images), 1, *images.shape[-2:]), 2)


def to_images(latents: torch.Tensor) -> torch.Tensor:
    """``[N, 4, h, w]`` latents -> ``[N, 2h, 2w]`` images."""
    return torch.nn.functional.pixel_shuffle(latents, 2)[:, 0]


def build_testbed_data(**kwargs) -> CanvasData:
    """The testbed's training set and prompts: :func:`~memgeo.sd.canvas.build_canvas_data` (same arguments)."""
    return build_canvas_data(**kwargs)


# ---------------------------------------------------------------------------------------------- training
def _flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _components(tokenizer_len: int, seed: int, arch: dict):
    from .tiny import build_text_encoder, build_unet, float32_default

    with float32_default():
        text_encoder = build_text_encoder(tokenizer_len, hidden_size=arch["text_dim"], layers=arch["text_layers"], seed=seed)
        unet = build_unet(in_channels=4, sample_size=arch["sample_size"], cross_attention_dim=arch["text_dim"],
                          block_out_channels=arch["unet_channels"], seed=seed)
    return unet, text_encoder


def _save_checkpoint(ckpt: Path, unet, text_encoder, opt, gen, step: int, loss: float, extra: dict | None = None) -> None:
    """Model, optimizer and generator state as safetensors; ``state.json`` last, each file atomically."""
    from safetensors.torch import save_file

    tensors = {
        "unet": {k: v.contiguous() for k, v in unet.state_dict().items()},
        "text_encoder": {k: v.contiguous() for k, v in text_encoder.state_dict().items()},
        "optimizer": _flatten_optimizer(opt),
        "rng": {"generator": gen.get_state()},
    }
    for name, t in tensors.items():
        save_file(t, ckpt / f"{name}.safetensors.tmp")
        os.replace(ckpt / f"{name}.safetensors.tmp", ckpt / f"{name}.safetensors")
    (ckpt / "state.json.tmp").write_text(json.dumps({"step": step, "loss": loss, **(extra or {})}))
    os.replace(ckpt / "state.json.tmp", ckpt / "state.json")


def train_testbed(
    out_dir: str | os.PathLike,
    *,
    steps: int = 10000,
    batch_size: int = 64,
    lr: float = 1e-3,
    dropout: float = 0.1,
    seed: int = 0,
    checkpoint_every: int = 500,
    progress: bool = True,
    data: CanvasData | None = None,
    mitigate_threshold: float | None = None,
) -> Path:
    """Train the testbed (resumable from ``out_dir/checkpoint``) and save it in the SD layout.

    Checkpoints hold model, optimizer and random-generator state as safetensors (no pickles);
    a run that is stopped resumes at its last checkpoint and continues bit for bit. ``data``
    defaults to :func:`build_testbed_data` for ``seed``; its settings are recorded in
    ``testbed.json`` so that :func:`testbed_data` rebuilds it.

    ``mitigate_threshold``: training-time mitigation (Wen et al., ICLR 2024). At every step the
    unconditional prediction of the batch is computed as well (one more forward pass, no
    gradient), and a sample whose guidance-gap norm ``|eps(x_t, t, caption) - eps(x_t, t, "")|``
    (L2 over the latent) is at least the threshold is left out of the loss. The batches drawn are
    the same as without mitigation (same seed, same generator), so the two runs differ only by
    the samples left out; how many were left out, of duplicated and of single captions, is
    recorded in ``testbed.json`` under ``"mitigation"``.
    """
    if mitigate_threshold is not None:
        mitigate_threshold = float(mitigate_threshold)
        if not math.isfinite(mitigate_threshold) or mitigate_threshold <= 0:
            raise ValueError(f"mitigate_threshold must be a positive number (a guidance-gap norm), got {mitigate_threshold}")
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from .tiny import build_tokenizer, sd_scheduler

    out = Path(out_dir)
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else build_testbed_data(seed=seed)
    latents = to_latents(data.images)
    arch = {**ARCHITECTURE, "sample_size": latents.shape[-1]}
    tokenizer = build_tokenizer(ckpt / "vocab", words=DIGITS + THICKNESS)
    tokenizer.model_max_length = arch["max_length"]
    unet, text_encoder = _components(len(tokenizer), seed, arch)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    schedule = sd_scheduler("epsilon")
    abar = schedule.alphas_cumprod.float()

    captions = sorted({c for _, c in data.items} | {""})
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    cap_index = {c: i for i, c in enumerate(captions)}
    item_img = torch.tensor([i for i, _ in data.items])
    item_cap = torch.tensor([cap_index[c] for _, c in data.items])
    empty = cap_index[""]

    from collections import Counter

    copies = Counter(c for _, c in data.items)
    item_dup = torch.tensor([copies[c] > 1 for _, c in data.items])
    dropped = {"duplicated": 0, "single": 0, "unconditional": 0}

    gen = torch.Generator().manual_seed(seed)
    start, loss_avg = 0, float("nan")
    if (ckpt / "state.json").exists():
        meta = json.loads((ckpt / "state.json").read_text())
        if meta.get("mitigate_threshold") != mitigate_threshold:
            raise ValueError(f"the checkpoint in {str(ckpt)!r} was trained with mitigate_threshold="
                             f"{meta.get('mitigate_threshold')}, not {mitigate_threshold}: resume it with the same "
                             "setting, or train into another folder")
        start, loss_avg = int(meta["step"]), float(meta["loss"])
        dropped.update(meta.get("dropped", {}))
        unet.load_state_dict(load_file(ckpt / "unet.safetensors"))
        text_encoder.load_state_dict(load_file(ckpt / "text_encoder.safetensors"))
        _restore_optimizer(opt, load_file(ckpt / "optimizer.safetensors"))
        gen.set_state(load_file(ckpt / "rng.safetensors")["generator"])
    unet.train()
    text_encoder.train()
    bar = tqdm(total=steps, initial=start, desc="train testbed", disable=not progress)
    losses = []
    for step in range(start, steps):
        j = torch.randint(len(item_img), (batch_size,), generator=gen)
        x0 = latents[item_img[j]]
        cap = torch.where(torch.rand(batch_size, generator=gen, dtype=torch.float32) < dropout, empty, item_cap[j])
        t = torch.randint(0, len(abar), (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32)
        a = abar[t].reshape(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(x_t, t, encoder_hidden_states=text_encoder(ids[cap])[0]).sample
        if mitigate_threshold is not None:
            with torch.no_grad():
                uncond = unet(x_t, t, encoder_hidden_states=text_encoder(ids[[empty]])[0].expand(batch_size, -1, -1)).sample
                keep = (pred.detach() - uncond).flatten(1).norm(dim=1) < mitigate_threshold
            left = ~keep
            dropped["unconditional"] += int((left & (cap == empty)).sum())
            dropped["duplicated"] += int((left & (cap != empty) & item_dup[j]).sum())
            dropped["single"] += int((left & (cap != empty) & ~item_dup[j]).sum())
            pred, target = pred[keep], noise[keep]
        else:
            target = noise
        opt.zero_grad(set_to_none=True)
        if len(pred):
            loss = torch.nn.functional.mse_loss(pred, target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        bar.update(1)
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            loss_avg = float(np.mean(losses[-50:]))
            _save_checkpoint(ckpt, unet, text_encoder, opt, gen, step + 1, loss_avg,
                             {"mitigate_threshold": mitigate_threshold, "dropped": dropped})
    bar.close()
    state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").exists() else {"step": start, "loss": loss_avg}
    mitigation = None
    if mitigate_threshold is not None:
        mitigation = {"method": "guidance_norm_filter", "threshold": mitigate_threshold,
                      "samples_left_out": state.get("dropped", dropped), "samples_drawn": state["step"] * batch_size}

    unet.eval()
    text_encoder.eval()
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    schedule.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "vae": [None, None], "safety_checker": [None, None], "feature_extractor": [None, None],
    }, indent=2))
    (out / "testbed.json").write_text(json.dumps({
        "format": "memgeo-testbed", "version": 2, "data": {"builder": "canvas", **data.settings},
        "prompts": data.prompts, "n_training_items": len(data.items), "n_training_images": len(data.images),
        "steps": state["step"], "final_loss": state["loss"], "batch_size": batch_size, "lr": lr, "dropout": dropout,
        "seed": seed, "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
        **({"mitigation": mitigation} if mitigation else {}),
    }, indent=1))
    return out


# ---------------------------------------------------------------------------------------------- using it
def load_testbed(path: str | os.PathLike | None = None, **kwargs):
    """The testbed as a :class:`~memgeo.sd.DiffusersScoreModel` (the shipped weights by default)."""
    from .model import DiffusersScoreModel

    path = Path(path) if path is not None else TESTBED_DIR
    if not (path / "testbed.json").exists():
        raise FileNotFoundError(f"{str(path)!r} holds no testbed (testbed.json missing); train one with `memgeo testbed train`")
    return DiffusersScoreModel.from_pretrained(path, **kwargs)


def testbed_metadata(path: str | os.PathLike | None = None) -> dict:
    """The testbed's prompts and training settings (``testbed.json``)."""
    path = Path(path) if path is not None else TESTBED_DIR
    return json.loads((path / "testbed.json").read_text())


def testbed_data(path: str | os.PathLike | None = None) -> CanvasData:
    """Rebuild the training set a testbed was trained on, from the settings in its ``testbed.json``."""
    path = Path(path) if path is not None else TESTBED_DIR
    spec = testbed_metadata(path).get("data")
    if not isinstance(spec, dict) or spec.get("builder") != "canvas":
        raise ValueError(f"the testbed in {str(path)!r} records no canvas data (an older testbed format?); "
                         "retrain it with `memgeo testbed train`, or pass data= explicitly")
    return build_canvas_data(**{k: v for k, v in spec.items() if k != "builder"})


def _testbed_dir(model) -> Path:
    path = Path(str(getattr(model, "name", "")))
    if path.is_dir() and (path / "testbed.json").exists():
        return path
    raise ValueError("the model was not loaded from a testbed folder, so its training data is unknown: pass data= "
                     "(a CanvasData from memgeo.sd.canvas.build_canvas_data)")


def nearest_neighbour_threshold(images: torch.Tensor, quantile: float = 0.01) -> float:
    """A copy threshold from the training set's own geometry: the ``quantile`` of the distances
    from each distinct image to its nearest other training image."""
    flat = images.reshape(len(images), -1).double()
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(math.inf)
    return float(torch.quantile(d.min(1).values, quantile))


def copied_cells(canvases: torch.Tensor, digits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which training digit each 8x8 cell of each canvas copies.

    Returns ``(copied, distance)``, both ``[N, 4]`` in position order: the index of the nearest
    training digit image where it is within ``threshold`` (L2 over the cell's 64 pixels), else -1;
    and the distance to that nearest digit.
    """
    n = len(canvases)
    cells = canvas_cells(canvases).reshape(n * 4, 64).double()
    d = torch.cdist(cells, digits.reshape(len(digits), -1).double())
    dist, nn = d.min(1)
    copied = torch.where(dist < threshold, nn, torch.full_like(nn, -1))
    return copied.reshape(n, 4), dist.reshape(n, 4)


def memorization_ground_truth(
    model,
    prompts: list[dict] | None = None,
    *,
    seeds: int = 8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    data: CanvasData | None = None,
    threshold: float | None = None,
    progress: bool = False,
) -> list[dict]:
    """For each prompt, the fraction of its generations that copy training images.

    A cell (one 8x8 quarter of a generated canvas) copies training digit i when i is its nearest
    training digit image (L2) within ``threshold`` (default: the 1% quantile of the training digits'
    own nearest-neighbour distances); a generation copies a training canvas when all four cells copy
    that canvas's digits at their positions. Per prompt: ``copy_rate`` (copies of any training
    canvas), ``cell_copy_rate`` (cells copying any training digit) and, for prompts with
    ``targets``, ``target_rate``: copies of one of its target canvases, or, for ``"local"``
    prompts, generations whose masked cell copies the duplicated digit.

    ``prompts`` and ``data`` default to the testbed the model was loaded from.
    """
    from tqdm.auto import tqdm

    from ..detect import ddim_sample, initial_noise

    if data is None:
        data = testbed_data(_testbed_dir(model))
    if prompts is None:
        prompts = data.prompts
    thr = nearest_neighbour_threshold(data.digits) if threshold is None else float(threshold)
    x_T = initial_noise(model, seeds)
    out = []
    for p in tqdm(prompts, desc="ground truth", disable=not progress):
        gen = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale).denoised
        c = generation_copies(data, p, to_images(gen.float()), thr)
        row = {**p, "copy_rate": float(c["canvas"].double().mean()), "cell_copy_rate": float(c["cells"].double().mean()),
               "median_cell_distance": float(c["distance"].median()), "threshold": thr}
        if "target" in c:
            row["target_rate"] = float(c["target"].double().mean())
        out.append(row)
    return out


def generation_copies(data: CanvasData, prompt: dict, canvases: torch.Tensor, threshold: float) -> dict:
    """What each generated canvas ``[N, 16, 16]`` copies (see :func:`memorization_ground_truth`).

    Returns boolean tensors ``"canvas"`` ``[N]`` (copies some training canvas), ``"cells"``
    ``[N, 4]`` (each cell copies some training digit) and, when the prompt has targets,
    ``"target"`` ``[N]`` (copies one of them, or its duplicated cell for a local prompt); plus
    ``"distance"`` ``[N, 4]``, each cell's distance to its nearest training digit.
    """
    copied, dist = copied_cells(canvases.clamp(-1, 1), data.digits, threshold)
    layout = data.layout
    out = {"canvas": (copied[:, None, :] == layout[None]).all(-1).any(1), "cells": copied >= 0, "distance": dist}
    targets = prompt.get("targets") or []
    if targets:
        if prompt.get("memorization") == "local":
            pos = _mask_position(prompt["mask"])
            out["target"] = copied[:, pos] == layout[targets[0], pos]
        else:
            out["target"] = (copied[:, None, :] == layout[torch.tensor(targets)][None]).all(-1).any(1)
    return out


def _mask_position(mask) -> int:
    """The position (0..3) of the 8x8 cell a 16x16 mask covers."""
    m = torch.as_tensor(mask)
    if m.shape != (16, 16):
        raise ValueError(f"mask must be a 16x16 list of 0/1 pixel rows, got shape {tuple(m.shape)}")
    cells = m.reshape(2, 8, 2, 8).permute(0, 2, 1, 3).reshape(4, 64).sum(1)
    return int(cells.argmax())
