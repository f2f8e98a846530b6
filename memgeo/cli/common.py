"""What the commands share: argument types that check input before any work, model loading, output guards."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["LABELS", "SHARED_ARGUMENTS", "shared_arguments", "positive_int", "finite_float", "probability",
           "nonempty_text", "no_loading_bars", "load_model", "explain_target"]

LABELS = {"1": 1, "mem": 1, "memorized": 1, "0": 0, "nmem": 0, "ordinary": 0, "auto": None}


def positive_int(text: str) -> int:
    """An argument type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argument type: a finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def probability(text: str) -> float:
    """An argument type: a rate strictly between 0 and 1."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate strictly between 0 and 1 (0.01 for 1%), got {text!r}")
    return value


def nonempty_text(text: str) -> str:
    """An argument type: text with at least one non-space character."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty prompt")
    return text


#: The arguments several commands take, declared once: keyword name -> ``add_argument`` options. A command takes
#: them through :func:`shared_arguments`, and may set its own default, help or ``required`` for one.
SHARED_ARGUMENTS: dict[str, dict] = {
    "model": dict(help="model folder (Stable Diffusion layout; default: the embedded testbed)"),
    "lora": dict(help="a LoRA adapter (.safetensors, or a folder holding one) loaded onto --model through diffusers' "
                      "loader"),
    "seeds": dict(type=positive_int, default=4, help="initial-noise seeds per prompt"),
    "steps": dict(type=positive_int, default=50, help="DDIM steps"),
    "guidance": dict(type=finite_float, default=7.5, help="classifier-free guidance scale"),
    "out": dict(help="where the results go"),
    "device": dict(default="cpu", help="where the networks run (cpu, cuda)"),
    "no_progress": dict(action="store_true", help="no progress bars"),
}


def shared_arguments(parser, **chosen) -> None:
    """Add the shared arguments named as keywords (``model={}``, ``seeds={"default": 8}``, ...) to one argument group
    of ``parser``, each with :data:`SHARED_ARGUMENTS`' options updated by the given ones; the help says the default."""
    group = parser.add_argument_group("common options")
    for name, overrides in chosen.items():
        if name not in SHARED_ARGUMENTS:
            raise ValueError(f"no shared argument {name!r}; shared: {sorted(SHARED_ARGUMENTS)}")
        options = {**SHARED_ARGUMENTS[name], **overrides}
        default = options.get("default")
        if default is not None and options.get("action") is None and "default" not in options.get("help", ""):
            options["help"] = f"{options.get('help', '')} (default {default})".strip()
        group.add_argument("--" + name.replace("_", "-"), **options)


def no_loading_bars() -> None:
    """Silence the weight-loading progress bars of diffusers and transformers (for --no-progress)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def explain_target(out: Path, name: str, record: dict) -> Path:
    """``out/name``, refusing to overwrite a file that holds another prompt's or model's result."""
    import json

    path = out / name
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} exists and is not a memgeo result ({err}); choose another --out") from err
        if any(old.get(k) != record[k] for k in ("prompt", "model", "settings")):
            raise ValueError(f"{path} already holds a result for prompt {old.get('prompt')!r} on "
                             f"{(old.get('model') or {}).get('name')!r} with other settings; choose another --out "
                             "(nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return path


def load_model(args):
    """``(model, folder)``: ``--model`` (default: the embedded testbed) with ``--lora``, and where the command takes
    them ``--device``, ``--dtype`` and ``--allow-download``, loaded as :func:`~memgeo.testbed.load_model_folder` does:
    every command loads its model here."""
    import torch

    from ..testbed import TESTBED_DIR, load_model_folder

    if args.no_progress:
        no_loading_bars()
    path = Path(args.model) if args.model else TESTBED_DIR
    options = {"lora": getattr(args, "lora", None)}
    if getattr(args, "device", None) is not None:
        options["device"] = args.device
    if getattr(args, "dtype", None) is not None:
        options["dtype"] = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if getattr(args, "allow_download", False):
        options["allow_download"] = True
    return load_model_folder(path, **options), path
