"""A fine-tune audit: which prompts' generations copy given training images, by the field's criterion.

Generations and training images are compared as images: a generation is decoded by the model folder's VAE (the
sampler's final latent, unscaled and unshifted as the pipeline does before decoding), each training image is
resized (shorter side) and centre-cropped to the model's image size; the embedded testbed has no VAE, its latents
are its 16x16 grayscale images folded space-to-depth. The training images are deduplicated (pixel-identical files
count once, their names grouped) before any neighbour statistic.

A generation is a copy when the ratio of its L2 distance to the nearest distinct training image over that to the
second nearest is below ``ratio`` (1/3: Gu et al., "On Memorization in Diffusion Models", TMLR 2025, as
:data:`memgeo.testbed.truth.COPY_RATIO`): the ratio does not depend on the folder's diversity, and a blend of
training images, about as near several of them, is not a copy. A local copy is found patch by patch: the image is cut
into a ``patches x patches`` grid and each patch is compared with the distinct training patches at its position (flat
patches, pixel standard deviation below :data:`FLAT_PATCH`, are skipped: a plain background is shared by many images
and copies nothing). A generation's ratio is the smaller of its whole-image and best-patch ratios.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._util import atomic_write_text
from ..sampling import ddim_sample, initial_noise
from ..testbed.truth import COPY_RATIO, distinct_rows, two_nearest

__all__ = ["TrainingImages", "load_training_images", "audit_copies", "copy_ratios", "format_audit", "IMAGE_SUFFIXES",
           "FLAT_PATCH"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

#: Patches whose pixels (in [-1, 1]) vary less than this standard deviation are not judged (a plain background).
FLAT_PATCH = 0.05


@dataclass
class TrainingImages:
    """Training images in the model's image space, deduplicated.

    Attributes:
        names: one name per distinct image (pixel-identical files joined by ``" = "``).
        images: the distinct images ``[U, C, H, W]`` in [-1, 1].
        files: how many files were read.
        space: what the comparison is made in.
        decode: the model's final latents ``[S, *event_shape]`` -> images ``[S, C, H, W]`` in [-1, 1].
    """

    names: list[str]
    images: torch.Tensor
    files: int
    space: str
    decode: Callable = field(repr=False)


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


def _decoder(model) -> tuple[Callable, tuple[int, int], str, str]:
    """How the model's final latents become images, the image size, the PIL mode and a description."""
    side = tuple(model.event_shape[1:])
    if hasattr(model, "to_image"):  # the testbed: latents are the images folded space-to-depth
        def decode(x0):
            return torch.stack([model.to_image(x) for x in x0])[:, None].clamp(-1, 1)

        return decode, (2 * side[0], 2 * side[1]), "L", "the testbed's 16x16 grayscale images"
    folder = getattr(model, "folder", None)
    if folder is None or not (Path(folder) / "vae").is_dir():
        raise ValueError("training_images needs the model folder's VAE (vae/) to decode generations into images; "
                         "load the model from a local folder that has one")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, torch_dtype=torch.float32).eval()
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0

    @torch.no_grad()
    def decode(x0):
        return vae.decode(x0.float() / scale + shift).sample.clamp(-1, 1)

    size = (side[0] * model.vae_scale_factor, side[1] * model.vae_scale_factor)
    return decode, size, "RGB", "images decoded by the model folder's VAE"


def load_training_images(model, folder) -> TrainingImages:
    """Read a folder of training images at ``model``'s image size, deduplicated, with the model's decoder."""
    files = _image_files(folder)
    decode, size, mode, space = _decoder(model)
    imgs = torch.stack([_pixels(f, size, mode) for f in files]).double()
    unique, inverse = distinct_rows(imgs)
    names = [" = ".join(f.name for f, k in zip(files, inverse.tolist()) if k == u) for u in range(len(unique))]
    if len(unique) < 2:
        raise ValueError(f"training_images folder {str(folder)!r} must hold at least 2 distinct images; its "
                         f"{len(files)} files are all the same picture")
    return TrainingImages(names, unique.reshape(len(unique), *imgs.shape[1:]), len(files), f"{space}, L2", decode)


def copy_ratios(generations: torch.Tensor, training: torch.Tensor, *, patches: int = 2) -> dict:
    """The copy criterion (module docstring) for ``generations`` ``[G, C, H, W]`` against distinct ``training``
    images ``[U, C, H, W]`` (U >= 2).

    Returns ``[G]`` tensors: ``"ratio"`` (the smaller of whole-image and best-patch ratios), ``"nearest"`` (index of the
    training image the judged part is nearest to) and ``"where"`` (-1: the whole image; else the patch's index,
    row-major in the grid)."""
    g = generations.double()
    d1, d2, nn = two_nearest(g.flatten(1), training.flatten(1).double())
    ratio, where = d1 / d2, torch.full((len(g),), -1)
    _, _, h, w = g.shape
    ph, pw = h // patches, w // patches
    if patches > 1:
        for k in range(patches * patches):
            r, c = divmod(k, patches)
            gp = g[:, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw]
            tp = training[:, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].double()
            bank, inverse = distinct_rows(tp)
            if len(bank) < 2:
                continue
            p1, p2, pn = two_nearest(gp.flatten(1), bank)
            flat = bank[pn].std(1) < FLAT_PATCH
            pr = torch.where(flat, torch.full_like(p1, torch.inf), p1 / p2)
            owner = torch.tensor([int((inverse == j).nonzero()[0]) for j in pn.tolist()])  # a training image with it
            better = pr < ratio
            ratio, where, nn = torch.where(better, pr, ratio), torch.where(better, k, where), torch.where(better, owner, nn)
    return {"ratio": ratio, "nearest": nn, "where": where}


def audit_copies(model, prompts: list[str], training: TrainingImages, *, seeds=(0, 1, 2, 3), n_steps: int = 50,
                 guidance_scale: float = 7.5, ratio: float = COPY_RATIO, patches: int = 2,
                 out: str | Path | None = None, gallery: str | Path | None = None, progress: bool = False) -> dict:
    """For each prompt, generate with ``seeds`` and judge each generation by the copy criterion.

    Returns (and with ``out``, writes atomically to ``out/copies.json``) ``{"model", "space", "criterion",
    "training_images", "settings", "prompts": [{"text", "copy_rate", "ratio" (median), "nearest" and "ratios" per
    seed, "where" per seed ("image" or the patch)}], "regurgitation": {training image: copies whose nearest it is}}``;
    ``gallery``: a PNG of the closest matches (generation, nearest training image, ratio). An existing
    ``copies.json`` of another model, training set, prompt list or setting is refused, never overwritten.
    """
    from tqdm.auto import tqdm

    from .run import model_identity

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    if isinstance(patches, bool) or not isinstance(patches, int) or patches < 1:
        raise ValueError(f"patches must be a positive integer (the grid's side), got {patches!r}")
    record = {"model": model_identity(model), "space": training.space,
              "criterion": {"ratio_below": ratio, "patches": patches, "flat_patch_std": FLAT_PATCH},
              "training_images": training.names, "prompts_asked": list(prompts),
              "settings": {"seeds": list(seeds), "n_steps": n_steps, "guidance_scale": guidance_scale}}
    path = Path(out) / "copies.json" if out is not None else None
    if path is not None and path.exists():
        old = json.loads(path.read_text())
        keys = ("model", "training_images", "prompts_asked", "settings", "criterion")
        if any(old.get(k) != json.loads(json.dumps(record[k])) for k in keys):
            raise ValueError(f"{path} holds an audit of another model, training set, prompt list or setting; choose "
                             "another --out (nothing was overwritten)")
    rows, best = [], []
    counts = dict.fromkeys(training.names, 0)
    for text in tqdm(prompts, desc="copies", disable=not progress):
        x0 = ddim_sample(model, text, initial_noise(model, list(seeds)), n_steps=n_steps, guidance_scale=guidance_scale).x0
        images = training.decode(x0)
        c = copy_ratios(images, training.images, patches=patches)
        copy = c["ratio"] < ratio
        for j in c["nearest"][copy].tolist():
            counts[training.names[j]] += 1
        rows.append({"text": text, "copy_rate": float(copy.double().mean()), "ratio": float(c["ratio"].median()),
                     "nearest": [training.names[j] for j in c["nearest"].tolist()], "ratios": c["ratio"].tolist(),
                     "where": ["image" if k < 0 else f"patch {k}" for k in c["where"].tolist()]})
        k = int(c["ratio"].argmin())
        best.append((float(c["ratio"][k]), text, images[k], training.images[int(c["nearest"][k])]))
    record["prompts"] = rows
    record["regurgitation"] = {n: k for n, k in sorted(counts.items(), key=lambda kv: -kv[1]) if k}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1))
    if gallery is not None:
        from ..plotting import plot_copy_gallery

        best.sort(key=lambda b: b[0])
        plot_copy_gallery([{"label": f"{t if len(t) <= 40 else t[:37] + '...'}: ratio {r:.2f}", "target": None,
                            "generations": g[None], "nearest": n[None], "ratios": [r], "is_target": None,
                            "bound": ratio}
                           for r, t, g, n in best[:12]], gallery,
                          title=f"closest matches (ratio nearest / second nearest; a copy below {ratio:.2f})")
    return record


def format_audit(record: dict, top: int = 20) -> str:
    """The prompts whose generations copy a training image, most copied first, and the most regurgitated images."""
    crit = record["criterion"]
    rows = sorted(record["prompts"], key=lambda r: (-r["copy_rate"], r["ratio"]))
    lines = [f"copies of {len(record['training_images'])} distinct training images ({record['space']}; a copy: nearest / "
             f"second-nearest distance below {crit['ratio_below']:.3g}, whole image or one of {crit['patches']}x"
             f"{crit['patches']} patches):",
             f"  {'copy rate':>9}  {'nearest image':<28} {'min ratio':>9}  prompt"]
    for r in rows[:top]:
        i = min(range(len(r["ratios"])), key=r["ratios"].__getitem__)
        text = r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..."
        lines.append(f"  {r['copy_rate']:>9.2f}  {r['nearest'][i][:28]:<28} {r['ratios'][i]:>9.3f}  {text}")
    n = sum(r["copy_rate"] > 0 for r in rows)
    lines.append(f"  {n} of {len(rows)} prompts copy a training image in at least one generation")
    if record["regurgitation"]:
        lines.append("  most copied training images: " + ", ".join(f"{k} ({v})" for k, v in
                                                               list(record["regurgitation"].items())[:10]))
    return "\n".join(lines)
