"""Small helpers shared across rooms: even subsampling, atomic file writes, the one output rule, preset tables and
the typed settings every method's settings class derives from (a frozen dataclass whose fields are its options,
memgeo's defaults as the field defaults, the released code's differences in ``OFFICIAL``)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

__all__ = ["spread", "atomic_write_text", "atomic_replace", "draw_rows", "PRESET_NAMES", "resolve_preset",
           "check_output", "IMAGE_SUFFIXES", "Settings", "option", "preset_rows", "file_sha256"]

#: Suffixes of image files: an output *folder* named like one is refused (a typo for a file).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".pdf", ".svg")

_PACKAGE = Path(__file__).resolve().parent

#: The presets of every method table: the paper's released code and memgeo's default.
PRESET_NAMES = ("memgeo", "official")


def resolve_preset(table: dict, name: str, preset: str, **given) -> dict:
    """The options of the method ``name`` of ``table`` (method -> preset -> options) under ``preset``, overridden by
    every ``given`` value that is not None."""
    if name not in table:
        raise ValueError(f"no presets for {name!r}; methods with presets: {sorted(table)}")
    if preset not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {PRESET_NAMES}, got {preset!r}")
    out = dict(table[name][preset])
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def draw_rows(draw, generator, rows: int, dim: int):
    """A random tensor with ``rows`` rows along ``dim``: ``draw(generator, rows)`` from one generator, or, where
    ``generator`` is a list of one generator per row, ``draw(g_i, 1)`` for each row, concatenated. A row drawn from
    its own generator is the same whether it is computed alone or in a batch, so batched signals equal their
    one-row-at-a-time values."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != rows:
            raise ValueError(f"generator must be one torch.Generator or a list of one per row ({rows}), got {len(generator)}")
        import torch

        return torch.cat([draw(g, 1) for g in generator], dim=dim)
    return draw(generator, rows)


def spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced (all of them when there are no more than ``n``)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, max(n, 0)).round().astype(int)]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: how weights files are named and checked."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, then a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def atomic_replace(write, path: str | os.PathLike) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path


def check_output(path, *, arg: str = "--out", folder: bool = False, suffixes: tuple[str, ...] | None = None) -> Path:
    """The one rule for where a command writes, checked before any work: ``path`` (named ``arg`` in errors) lies
    outside the installed package; a file's folder exists and is writable and the file is not a folder; a folder
    (``folder=True``) may be new, but its parent must exist and be writable, it is not an existing file, and its name
    has no image suffix (:data:`IMAGE_SUFFIXES`). ``suffixes``: the file suffixes accepted (e.g. ``(".png",)``).
    Nothing is created."""
    p = Path(path)
    r = p.resolve()
    if r == _PACKAGE or _PACKAGE in r.parents:
        raise ValueError(f"{arg} {str(p)!r} lies inside the installed package ({_PACKAGE}); give a path "
                         "outside it")
    if folder:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{arg} {str(p)!r} names a folder (the command writes several files into it); give a "
                             f"folder name without an image suffix such as {p.suffix!r}")
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{arg} {str(p)!r} is an existing file; give a folder")
        parent = p if p.is_dir() else p.parent
    else:
        if p.is_dir():
            raise IsADirectoryError(f"{arg} {str(p)!r} is a directory; give a file path")
        if suffixes is not None and p.suffix.lower() not in suffixes:
            raise ValueError(f"{arg} {str(p)!r} must be a {' or '.join(suffixes)} file")
        parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{arg} {str(p)!r}: the folder {str(parent)!r} does not exist; create it first or "
                                "give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{arg} {str(p)!r}: the folder {str(parent)!r} is not writable")
    return p


def option(default: Any, help: str, *, choices: tuple | None = None, type: Callable | None = None,
           check: Callable | None = None, flag: bool = True):
    """A settings field: its memgeo default and what it sets (``help``); ``choices`` and ``type`` read a command-line
    value; ``check(model, value)`` tests a value against a model once its configuration is read; ``flag=False`` for
    a constant of the released code that no command sets."""
    return field(default=default, metadata={"help": help, "choices": choices, "type": type, "check": check,
                                            "flag": flag})


@dataclass(frozen=True)
class Settings:
    """A method's settings. ``Settings()`` is memgeo's preset, :meth:`official` the released code's."""

    OFFICIAL: ClassVar[dict] = {}

    @classmethod
    def official(cls) -> "Settings":
        """The released code's settings."""
        return cls(**cls.OFFICIAL)

    @classmethod
    def preset(cls, name: str) -> "Settings":
        """The settings of the preset ``name`` (``"memgeo"`` or ``"official"``)."""
        if name not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {PRESET_NAMES}, got {name!r}")
        return cls() if name == "memgeo" else cls.official()

    @classmethod
    def resolve(cls, settings: "Settings | None" = None, preset: str = "memgeo", **options) -> "Settings":
        """The settings one call runs with: ``settings`` (an instance of this class) or else the preset ``preset``,
        with every option given (not None) replacing its field. Every "auto" is left for the caller's one place."""
        if settings is None:
            return cls.preset(preset).given(**options)
        if not isinstance(settings, cls):
            raise ValueError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
        return settings.given(**options)

    def given(self, **options) -> "Settings":
        """These settings with every option given (not None) replaced; an unknown option is an error naming it."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(f"{type(self).__name__} has no option {unknown}; options: {sorted(names) or 'none'}")
        return dataclasses.replace(self, **{k: v for k, v in options.items() if v is not None})

    def as_options(self) -> dict:
        """The settings as the signal function's keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def preset_rows(settings: dict) -> dict:
    """``{method: {"memgeo": options, "official": options}}`` of a table of settings classes."""
    return {name: {p: cls.preset(p).as_options() for p in PRESET_NAMES} for name, cls in settings.items()}


def settings_table(settings: dict, *, kind: str = "signal") -> str:
    """The markdown table of every method's options (``settings``: name -> settings class): its command-line flag
    (:func:`flag_name`), memgeo's default, the released code's, what it sets. ``kind`` names the first column (signal,
    method)."""
    lines = [f"| {kind} | option | flag | memgeo | official | what it sets |", "|---|---|---|---|---|---|"]
    for name, cls in settings.items():
        memgeo, official = cls(), cls.official()
        for f in fields(cls):
            flag = f"`{flag_name(name, f.name)}`" if f.metadata["flag"] else "-"
            lines.append(f"| `{name}` | `{f.name}` | {flag} | {_cell(getattr(memgeo, f.name))} | "
                         f"{_cell(getattr(official, f.name))} | {f.metadata['help']} |")
    return "\n".join(lines)


def flag_name(name: str, option_name: str) -> str:
    """A command's flag for a method's option: ``--flipd-t``, ``--p-laplace-n-directions``, ``--embedding-lr``."""
    return f"--{name}-{option_name}".replace("_", "-")


def _cell(value) -> str:
    if isinstance(value, tuple) and len(value) > 4:
        return f"{value[0]}, {value[1]}, ..., {value[-1]}"
    return "-" if value is None else str(value)
