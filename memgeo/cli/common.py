"""What the commands share: argument types that check input before any work, model loading, output guards."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["LABELS", "positive_int", "finite_float", "probability", "nonempty_text", "no_loading_bars", "load_model",
           "explain_target"]

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
    """``(model, folder)``: ``--model`` (default: the embedded testbed), loaded as :func:`~memgeo.testbed.load_model_folder` does."""
    from ..testbed import TESTBED_DIR, load_model_folder

    if args.no_progress:
        no_loading_bars()
    path = Path(args.model) if args.model else TESTBED_DIR
    return load_model_folder(path, lora=getattr(args, "lora", None)), path
