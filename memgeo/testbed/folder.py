"""The testbed's folder: the embedded weights, loading, its recorded settings, and knowing a model is a testbed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._util import file_sha256
from .canvas import CanvasData, build_canvas_data, to_images

__all__ = ["TESTBED_DIR", "testbed_folder", "load_model_folder", "load_testbed", "testbed_metadata", "testbed_name", "testbed_data",
           "base_folder", "weights_fingerprint", "check_model_output", "lora_base_check"]


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
    return file_sha256(Path(path) / "unet" / "diffusion_pytorch_model.safetensors")


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


def _holding(folder: Path) -> tuple[str, bool] | None:
    """``(what a model folder holds, in words; whether it is more than a testbed run's own unlabelled output)``, or
    None where it holds no model: ground truth, or a model that no testbed run wrote, is never resumed into."""
    if (folder / "testbed.json").is_file():
        try:
            meta = json.loads((folder / "testbed.json").read_text())
        except (OSError, ValueError):
            return "a testbed.json that is not readable", True
        what = ("a LoRA fine-tune" if meta.get("base") else "a trained testbed") + f" ({meta.get('steps', '?')} steps)"
        truth = meta.get("ground_truth")
        if isinstance(truth, dict):
            return what + f" with ground truth from {truth.get('seeds')} seeds", True
        return what, False
    if (folder / "model_index.json").is_file():
        return "a diffusers model (model_index.json) that no testbed run wrote", True
    return None


def check_model_output(out, *, overwrite: bool = False, arg: str = "--out") -> None:
    """Refuse, before any work, a training output folder that holds a model: a trained testbed or fine-tune (above
    all one with ground truth) or a diffusers model is never replaced unless ``overwrite``, except by its own run
    resuming from its checkpoint (``checkpoint/state.json``) while it has no ground truth. The installed package's
    weights are refused always. Nothing is created or removed here."""
    from .._util import check_output

    out = Path(out)
    check_output(out, arg=arg, folder=True)  # also refuses any path inside the package
    if not out.is_dir() or overwrite:
        return
    held = _holding(out)
    if held is None:
        return
    held, more = held
    resuming = (out / "checkpoint" / "state.json").is_file()
    if resuming and not more:
        return
    why = "training there would replace it"
    raise ValueError(f"{arg} {str(out)!r} holds {held}; {why}. Give another {arg}, or --overwrite (overwrite=True) to "
                     "train from scratch and replace it")


def lora_base_check(model_path, lora) -> dict:
    """Check a LoRA adapter against the model it is loaded onto, before loading either: where the adapter's folder
    records its base's UNet SHA-256 (``testbed.json``'s ``base_fingerprint``), the model's must be the same, or a
    clear error names both. Returns the pairing ``{"lora", "base", "base_fingerprint", "checked"}``; where the
    adapter records no base, says so once on stderr (a scan records the pairing in its store's header)."""
    import sys

    lora = Path(lora)
    folder = lora.parent if lora.is_file() else lora
    meta = testbed_metadata(folder) if _is_testbed(folder) else {}
    recorded = meta.get("base_fingerprint")
    weights = Path(model_path) / "unet" / "diffusion_pytorch_model.safetensors"
    found = weights_fingerprint(model_path) if weights.is_file() else None
    if recorded is not None and recorded != found:
        raise ValueError(f"--lora {str(lora)!r} was trained on a base whose UNet SHA-256 is {recorded[:16]}..., and "
                         f"--model {str(model_path)!r} has " + (f"{found[:16]}..." if found else "no UNet weights file "
                         "to check") + f": load it onto its base ({meta.get('base')!r})")
    if recorded is None:
        print(f"memgeo: the LoRA {str(lora)!r} records no base fingerprint, so memgeo cannot check that it was trained "
              f"on {str(model_path)!r}; the pairing is recorded with the results", file=sys.stderr)
    return {"lora": str(lora), "base": str(model_path), "base_fingerprint": found, "checked": recorded is not None}


def load_model_folder(path, **kwargs):
    """A model folder as a score model: :func:`load_testbed` where it is a testbed (so the model knows
    its image layout and training set), else :meth:`~memgeo.models.DiffusersScoreModel.from_pretrained`."""
    from ..models.adapter import DiffusersScoreModel

    if _is_testbed(path):
        return load_testbed(path, **kwargs)
    pairing = lora_base_check(path, kwargs["lora"]) if kwargs.get("lora") is not None else None
    model = DiffusersScoreModel.from_pretrained(path, **kwargs)
    if pairing is not None:
        model.lora_pairing = pairing
    return model


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
        pairing = lora_base_check(path, kwargs["lora"]) if kwargs.get("lora") is not None else None
        model = DiffusersScoreModel.from_pretrained(path, **kwargs)
        model.to_image = lambda latent_map: to_images(latent_map[None].float())[0]
        model.data_range = (-1.0, 1.0)  # its latents are its pixels, in [-1, 1]
        if pairing is not None:
            model.lora_pairing = pairing
    lora = kwargs.get("lora")
    lora_dir = None if lora is None else Path(lora).parent if Path(lora).is_file() else Path(lora)
    if base is not None:  # a fine-tune's own folder knows its data and prompts
        model.testbed_dir = path
    elif lora_dir is not None and _is_testbed(lora_dir):
        model.testbed_dir = lora_dir
    return model


def testbed_name(path: str | os.PathLike | None = None) -> str:
    """How a result names the testbed it ran on: its folder (``embedded`` for the shipped one, whose model has
    changed over time) and its weights: the first 12 hex digits of its UNet's SHA-256, or for a LoRA fine-tune its
    adapter's and its base's name."""
    folder = Path(path) if path is not None else TESTBED_DIR
    name = "embedded" if path is None or folder.resolve() == TESTBED_DIR.resolve() else str(path)
    if (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        return f"{name} (UNet {weights_fingerprint(folder)[:12]})"
    adapter = folder / "pytorch_lora_weights.safetensors"
    base = base_folder(folder) if (folder / "testbed.json").is_file() else None
    if adapter.is_file() and base is not None:
        return f"{name} (LoRA {file_sha256(adapter)[:12]} on {testbed_name(base)})"
    return name


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
