"""Small helpers shared across rooms: even subsampling, atomic file writes and preset tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["spread", "atomic_write_text", "atomic_replace", "draw_rows", "PRESET_NAMES", "resolve_preset"]

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
