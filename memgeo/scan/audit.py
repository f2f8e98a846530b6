"""A fine-tune audit: which prompts' generations are near copies of given training images.

The distance lives in the model's own latent space: each training image is resized to the model's
image size (shorter side, then a centre crop), encoded by the folder's VAE (the mean of its posterior,
shifted and scaled as the pipeline scales latents) and compared with the sampler's final latent
(what the pipeline decodes) by L2 distance. The copy threshold comes from the training set's own geometry, as the testbed's
does (:func:`memgeo.testbed.nearest_neighbour_threshold`): the ``quantile`` of the distances from each
training image to its nearest other one. A generation closer than that to a training image is a copy:
it is nearer to one training image than all but ``quantile`` of the training images are to each other.
The embedded testbed has no VAE: its latents are its images folded space-to-depth, and its training
images are read as 16x16 grayscale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .._util import atomic_write_text
from ..sampling import ddim_sample, initial_noise
from ..testbed.truth import nearest_neighbour_threshold

__all__ = ["TrainingImages", "load_training_images", "audit_copies", "format_audit", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class TrainingImages:
    """Training images in the model's latent space, with the copy threshold they define."""

    names: list[str]
    latents: torch.Tensor  # [N, *event_shape]
    threshold: float
    quantile: float
    space: str


def _image_files(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"training_images must be a folder of images ({', '.join(IMAGE_SUFFIXES)}), got {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"training_images folder {str(folder)!r} must hold at least 2 images "
                         f"({', '.join(IMAGE_SUFFIXES)}); found {len(files)}")
    return files


def _pixels(path: Path, size: tuple[int, int], mode: str) -> torch.Tensor:
    """An image resized (shorter side) and centre-cropped to ``size`` (H, W), in [-1, 1], ``[C, H, W]``."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        h, w = size
        scale = max(h / im.height, w / im.width)
        im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BICUBIC)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.reshape(h, w, -1)).permute(2, 0, 1)


def load_training_images(model, folder, *, quantile: float = 0.01, batch_size: int = 8) -> TrainingImages:
    """Encode a folder of training images into ``model``'s latent space and set the copy threshold."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    files = _image_files(folder)
    side = tuple(model.event_shape[1:])
    if hasattr(model, "to_image"):  # the testbed: latents are the images folded space-to-depth
        from ..testbed.canvas import to_latents

        imgs = torch.stack([_pixels(f, (2 * side[0], 2 * side[1]), "L")[0] for f in files])
        latents, space = to_latents(imgs), "the testbed's latents (its 16x16 grayscale images folded space-to-depth), L2"
    else:
        vae_dir = getattr(model, "folder", None)
        if vae_dir is None or not (Path(vae_dir) / "vae").is_dir():
            raise ValueError("training_images needs the model folder's VAE (vae/) to encode the images into its latent "
                             "space; load the model from a local folder that has one")
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir, subfolder="vae", use_safetensors=True, torch_dtype=torch.float32).eval()
        scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
        size = (side[0] * model.vae_scale_factor, side[1] * model.vae_scale_factor)
        out = []
        with torch.no_grad():
            for a in range(0, len(files), batch_size):
                px = torch.stack([_pixels(f, size, "RGB") for f in files[a:a + batch_size]]).float()
                out.append(((vae.encode(px).latent_dist.mean - shift) * scale).to(torch.float64))
        latents = torch.cat(out)
        space = "the model's VAE latents (posterior mean, shifted and scaled as the pipeline does), L2"
    latents = latents.to(model.dtype)
    thr = nearest_neighbour_threshold(latents, quantile)
    return TrainingImages([f.name for f in files], latents, thr, quantile, space)


def audit_copies(model, prompts: list[str], training: TrainingImages, *, seeds=(0, 1, 2, 3), n_steps: int = 50,
                 guidance_scale: float = 7.5, out: str | Path | None = None, progress: bool = False) -> dict:
    """For each prompt, generate with ``seeds`` and find each generation's nearest training image.

    Returns (and with ``out``, writes atomically to ``out/copies.json``) ``{"model", "space", "threshold",
    "quantile", "settings", "prompts": [{"text", "copy_rate", "nearest" (name per seed), "distance" (per seed)}]}``.
    An existing ``copies.json`` of another model, training set or setting is refused, never overwritten.
    """
    from tqdm.auto import tqdm

    from .run import model_identity

    record = {"model": model_identity(model), "space": training.space, "threshold": training.threshold,
              "quantile": training.quantile, "training_images": training.names,
              "settings": {"seeds": list(seeds), "n_steps": n_steps, "guidance_scale": guidance_scale}}
    path = Path(out) / "copies.json" if out is not None else None
    if path is not None and path.exists():
        old = json.loads(path.read_text())
        if any(old.get(k) != json.loads(json.dumps(record[k])) for k in ("model", "training_images", "settings", "quantile")):
            raise ValueError(f"{path} holds an audit of another model, training set or setting; choose another --out "
                             "(nothing was overwritten)")
    flat = training.latents.flatten(1).double()
    rows = []
    for text in tqdm(prompts, desc="copies", disable=not progress):
        x0 = ddim_sample(model, text, initial_noise(model, list(seeds)), n_steps=n_steps, guidance_scale=guidance_scale).x0
        d = torch.cdist(x0.flatten(1).double(), flat)
        dist, nn = d.min(1)
        rows.append({"text": text, "copy_rate": float((dist < training.threshold).double().mean()),
                     "nearest": [training.names[i] for i in nn.tolist()], "distance": dist.tolist()})
    record["prompts"] = rows
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1))
    return record


def format_audit(record: dict, top: int = 20) -> str:
    """The prompts whose generations copy a training image, most copied first."""
    rows = sorted(record["prompts"], key=lambda r: (-r["copy_rate"], min(r["distance"])))
    lines = [f"copies of {len(record['training_images'])} training images ({record['space']}; threshold "
             f"{record['threshold']:.4g}, the {record['quantile']:g} quantile of their own nearest-neighbour distances):",
             f"  {'copy rate':>9}  {'nearest image':<28} {'min dist':>9}  prompt"]
    for r in rows[:top]:
        i = min(range(len(r["distance"])), key=r["distance"].__getitem__)
        text = r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..."
        lines.append(f"  {r['copy_rate']:>9.2f}  {r['nearest'][i]:<28} {r['distance'][i]:>9.4g}  {text}")
    n = sum(r["copy_rate"] > 0 for r in rows)
    lines.append(f"  {n} of {len(rows)} prompts copy a training image in at least one generation")
    return "\n".join(lines)
