"""The memorization testbed: a small text-to-image diffusion model trained here, with known memorized prompts.

Data: the 1797 handwritten digits that ship with scikit-learn (8x8, scaled to [-1, 1]), folded
space-to-depth into ``4 x 4 x 4`` latents so that, as in Stable Diffusion, each position has a
4-channel vector.

* Ordinary prompts compose many images each: ``"a {thickness} {slant} digit {name}"`` with
  stroke-thickness and slant buckets computed from the image (terciles per digit), 90
  compositions. ``n_heldout`` compositions never appear in training (their images are captioned
  ``"a digit {name}"``): the held-out ordinary prompts.
* Memorized prompts are unique captions, each paired with one training image duplicated
  ``k`` times, ``k`` log-uniform in ``duplication`` (5 to 50 by default), as duplicated images
  are what Stable Diffusion memorizes.

Model: a diffusers ``UNet2DConditionModel`` conditioned through a small ``CLIPTextModel`` (trained
jointly) on a byte-level ``CLIPTokenizer``; 10% prompt dropout for classifier-free guidance; Stable
Diffusion's scaled-linear schedule with epsilon prediction. It is saved in the Stable Diffusion
folder layout (no VAE: the latents are the images) and loaded by
:meth:`~memgeo.sd.DiffusersScoreModel.from_pretrained`, exactly as SD is.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "TESTBED_DIR",
    "TestbedData",
    "build_testbed_data",
    "train_testbed",
    "load_testbed",
    "testbed_metadata",
    "to_images",
    "memorization_ground_truth",
]

TESTBED_DIR = Path(__file__).resolve().parent / "testbed_weights"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "regular", "thick")
SLANT = ("left-leaning", "upright", "right-leaning")
_WORDS_A = ("amber", "silent", "northern", "velvet", "copper", "hollow", "crimson", "gentle", "frozen", "golden")
_WORDS_B = ("harbor", "lantern", "meadow", "archive", "canyon", "orchard", "signal", "voyage", "thistle", "quarry")


def to_latents(images: torch.Tensor) -> torch.Tensor:
    """``[N, 8, 8]`` images -> ``[N, 4, 4, 4]`` latents (space-to-depth, a coordinate permutation)."""
    return torch.nn.functional.pixel_unshuffle(images.reshape(-1, 1, 8, 8), 2)


def to_images(latents: torch.Tensor) -> torch.Tensor:
    """``[N, 4, 4, 4]`` latents -> ``[N, 8, 8]`` images."""
    return torch.nn.functional.pixel_shuffle(latents, 2).reshape(-1, 8, 8)


@dataclass
class TestbedData:
    """Training set and prompt sets of the testbed.

    Attributes:
        images: the distinct training images ``[N, 8, 8]`` in [-1, 1].
        items: training items ``(image index, caption)``, duplicates included.
        prompts: every evaluation prompt: ``{"text", "kind" ("memorized" | "ordinary" | "heldout"),
            "target" (image index, memorized only), "duplication", "digit"}``.
    """

    images: torch.Tensor
    items: list[tuple[int, str]]
    prompts: list[dict] = field(default_factory=list)


def _attributes(img: np.ndarray) -> tuple[float, float]:
    """(ink, slant): total ink, and the shear of the stroke (x-y covariance over y variance)."""
    w = img / max(img.sum(), 1e-9)
    ys, xs = np.mgrid[0:8, 0:8]
    my, mx = (w * ys).sum(), (w * xs).sum()
    cov_xy = (w * (xs - mx) * (ys - my)).sum()
    var_y = (w * (ys - my) ** 2).sum()
    return float(img.sum()), float(-cov_xy / max(var_y, 1e-9))  # > 0: top leans right


def build_testbed_data(*, n_memorized: int = 50, duplication=(5, 50), n_heldout: int = 10, seed: int = 0) -> TestbedData:
    """Captions and duplicates for the testbed (deterministic for a seed)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw, target = digits.images.astype(np.float64), digits.target
    images = torch.tensor(raw / 8.0 - 1.0, dtype=torch.float32)  # [0, 16] -> [-1, 1]
    rng = np.random.default_rng(seed)
    ink, slant = np.array([_attributes(im) for im in raw]).T
    thick_b, slant_b = np.zeros(len(raw), int), np.zeros(len(raw), int)
    for dgt in range(10):  # terciles within each digit
        m = target == dgt
        thick_b[m] = np.digitize(ink[m], np.quantile(ink[m], [1 / 3, 2 / 3]))
        slant_b[m] = np.digitize(slant[m], np.quantile(slant[m], [1 / 3, 2 / 3]))
    comps = [(d, a, b) for d in range(10) for a in range(3) for b in range(3)]
    held = {comps[i] for i in rng.choice(len(comps), size=n_heldout, replace=False)}

    def composed(d, a, b):
        return f"a {THICKNESS[a]} {SLANT[b]} digit {DIGITS[d]}"

    items, prompts = [], []
    for i in range(len(raw)):
        c = (int(target[i]), int(thick_b[i]), int(slant_b[i]))
        items.append((i, f"a digit {DIGITS[c[0]]}" if c in held else composed(*c)))
    for c in comps:
        prompts.append({"text": composed(*c), "kind": "heldout" if c in held else "ordinary", "target": None,
                        "duplication": 0, "digit": c[0]})
    chosen = rng.choice([i for i in range(len(raw)) if (int(target[i]), int(thick_b[i]), int(slant_b[i])) not in held],
                        size=n_memorized, replace=False)
    lo, hi = duplication
    names = set()
    for i in chosen:
        k = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        while True:
            text = f"{_WORDS_A[rng.integers(10)]} {_WORDS_B[rng.integers(10)]} no. {rng.integers(100, 1000)}"
            if text not in names:
                names.add(text)
                break
        items += [(int(i), text)] * k
        prompts.append({"text": text, "kind": "memorized", "target": int(i), "duplication": k, "digit": int(target[i])})
    return TestbedData(images, items, prompts)


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


def _components(tokenizer_len: int, seed: int):
    from .tiny import build_text_encoder, build_unet, float32_default

    with float32_default():
        text_encoder = build_text_encoder(tokenizer_len, seed=seed)
        unet = build_unet(in_channels=4, sample_size=4, seed=seed)
    return unet, text_encoder


def train_testbed(
    out_dir: str | os.PathLike,
    *,
    steps: int = 6000,
    batch_size: int = 64,
    lr: float = 1e-3,
    dropout: float = 0.1,
    seed: int = 0,
    checkpoint_every: int = 500,
    progress: bool = True,
    data: TestbedData | None = None,
) -> Path:
    """Train the testbed (resumable from ``out_dir/checkpoint``) and save it in the SD layout.

    Checkpoints hold model, optimizer and random-generator state as safetensors (no pickles);
    a run that is stopped resumes at its last checkpoint and continues bit for bit.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from .tiny import build_tokenizer, sd_scheduler

    out = Path(out_dir)
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    data = data or build_testbed_data(seed=seed)
    tokenizer = build_tokenizer(ckpt / "vocab")
    tokenizer.model_max_length = 40
    unet, text_encoder = _components(len(tokenizer), seed)
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
    latents = to_latents(data.images)
    empty = cap_index[""]

    gen = torch.Generator().manual_seed(seed)
    start = 0
    if (ckpt / "state.json").exists():
        meta = json.loads((ckpt / "state.json").read_text())
        start = int(meta["step"])
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
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.update(1)
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, ckpt / "unet.safetensors")
            save_file({k: v.contiguous() for k, v in text_encoder.state_dict().items()}, ckpt / "text_encoder.safetensors")
            save_file(_flatten_optimizer(opt), ckpt / "optimizer.safetensors")
            save_file({"generator": gen.get_state()}, ckpt / "rng.safetensors")
            (ckpt / "state.json").write_text(json.dumps({"step": step + 1, "loss": float(np.mean(losses[-50:]))}))
    bar.close()

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
    state = json.loads((ckpt / "state.json").read_text())
    (out / "testbed.json").write_text(json.dumps({
        "prompts": data.prompts, "n_training_items": len(data.items), "steps": state["step"], "final_loss": state["loss"],
        "batch_size": batch_size, "lr": lr, "dropout": dropout, "seed": seed,
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


def nearest_neighbour_threshold(images: torch.Tensor, quantile: float = 0.01) -> float:
    """A copy threshold from the training set's own geometry: the ``quantile`` of the distances
    from each distinct image to its nearest other training image."""
    flat = images.reshape(len(images), -1).double()
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(math.inf)
    return float(torch.quantile(d.min(1).values, quantile))


def memorization_ground_truth(
    model,
    prompts: list[dict],
    *,
    seeds: int = 8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    images: torch.Tensor | None = None,
    threshold: float | None = None,
    progress: bool = False,
) -> list[dict]:
    """For each prompt, the fraction of its generations that copy a training image.

    A generation copies image i when i is its nearest training image (L2 in pixel space) and the
    distance is below ``threshold`` (default: the 1% quantile of the training set's own
    nearest-neighbour distances). For a memorized prompt, ``target_rate`` counts copies of its
    duplicated target; ``copy_rate`` counts copies of any training image.
    """
    from tqdm.auto import tqdm

    from ..detect import ddim_sample, initial_noise

    if images is None:
        images = build_testbed_data().images
    thr = nearest_neighbour_threshold(images) if threshold is None else threshold
    flat = images.reshape(len(images), -1).double()
    x_T = initial_noise(model, seeds)
    out = []
    for p in tqdm(prompts, desc="ground truth", disable=not progress):
        gen = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale).denoised
        pix = to_images(gen.float()).reshape(seeds, -1).double().clamp(-1, 1)
        d = torch.cdist(pix, flat)
        dist, nn = d.min(1)
        copy = dist < thr
        row = {**p, "copy_rate": float(copy.double().mean()), "median_nn_distance": float(dist.median()), "threshold": thr}
        if p.get("target") is not None:
            row["target_rate"] = float((copy & (nn == p["target"])).double().mean())
            row["median_target_distance"] = float(d[:, p["target"]].median())
        out.append(row)
    return out
