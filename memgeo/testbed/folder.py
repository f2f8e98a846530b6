"""The testbed's folder: the embedded weights, loading, its recorded settings, and knowing a model is a testbed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .canvas import CanvasData, build_canvas_data, to_images

__all__ = ["TESTBED_DIR", "testbed_folder", "load_model_folder", "load_testbed", "testbed_metadata", "testbed_data",
           "base_folder", "weights_fingerprint"]


TESTBED_DIR = Path(__file__).resolve().parent / "weights"


def testbed_folder(model) -> Path | None:
    """The testbed folder ``model`` was loaded from (its training set is then known), or None.

    The one place that decides whether a model is a testbed: a model loaded from a local folder
    records it (``model.folder``); a testbed folder holds ``testbed.json``.
    """
    folder = getattr(model, "testbed_dir", None) or getattr(model, "folder", None)
    return Path(folder) if folder is not None and _is_testbed(folder) else None


def _is_testbed(path) -> bool:
    return (Path(path) / "testbed.json").is_file()


def weights_fingerprint(path) -> str:
    """The SHA-256 of a testbed's UNet weights (``unet/diffusion_pytorch_model.safetensors``): what a fine-tune
    records of its base, so that it is never loaded on another one."""
    digest = hashlib.sha256()
    with open(Path(path) / "unet" / "diffusion_pytorch_model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_folder(path) -> Path | None:
    """The base testbed of the fine-tune in ``path`` (None for a testbed trained from scratch): ``"embedded"`` is
    the shipped testbed, a relative path is taken from the fine-tune's folder. Where the fine-tune recorded its
    base's weights (``base_fingerprint``), they must be these: a clear error names both otherwise."""
    meta = testbed_metadata(path)
    base = meta.get("base")
    if base is None:
        return None
    folder = TESTBED_DIR if base == "embedded" else Path(path) / base  # an absolute base stays itself
    if not _is_testbed(folder):
        raise FileNotFoundError(f"the fine-tune in {str(path)!r} names its base {base!r}, and {str(folder)!r} holds "
                                "no testbed")
    recorded = meta.get("base_fingerprint")
    found = weights_fingerprint(folder) if recorded is not None else None
    if recorded != found:
        raise ValueError(f"the fine-tune in {str(path)!r} was trained on other base weights than those in "
                         f"{str(folder)!r} (UNet SHA-256 {recorded[:12]}..., found {found[:12]}...): "
                         "point its testbed.json 'base' at the testbed it was trained on")
    return folder


def load_model_folder(path, **kwargs):
    """A model folder as a score model: :func:`load_testbed` where it is a testbed (so the model knows
    its image layout and training set), else :meth:`~memgeo.models.DiffusersScoreModel.from_pretrained`."""
    from ..models.adapter import DiffusersScoreModel

    if _is_testbed(path):
        return load_testbed(path, **kwargs)
    return DiffusersScoreModel.from_pretrained(path, **kwargs)


def load_testbed(path: str | os.PathLike | None = None, **kwargs):
    """The testbed as a :class:`~memgeo.models.DiffusersScoreModel` (the shipped weights by default).

    Its latents are its images, folded space-to-depth: the model's ``to_image`` unfolds a latent map
    ``[C, h, w]`` into the image ``[2h, 2w]``, and :func:`testbed_folder` knows its training set.
    """
    from ..models.adapter import DiffusersScoreModel

    path = Path(path) if path is not None else TESTBED_DIR
    if not _is_testbed(path):
        raise FileNotFoundError(f"{str(path)!r} holds no testbed (testbed.json missing); train one with `memgeo testbed train`")
    base = base_folder(path)
    if base is not None:  # a fine-tune: its base testbed with this folder's LoRA adapter
        if kwargs.get("lora") is not None:
            raise ValueError(f"{str(path)!r} is a fine-tune (a LoRA of {base}); load it alone, without lora=")
        model = load_testbed(base, lora=path, **kwargs)
    else:
        model = DiffusersScoreModel.from_pretrained(path, **kwargs)
        model.to_image = lambda latent_map: to_images(latent_map[None].float())[0]
    lora = kwargs.get("lora")
    lora_dir = None if lora is None else Path(lora).parent if Path(lora).is_file() else Path(lora)
    if base is not None:  # a fine-tune's own folder knows its data and prompts
        model.testbed_dir = path
    elif lora_dir is not None and _is_testbed(lora_dir):
        model.testbed_dir = lora_dir
    return model


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
