"""Prompt files: JSON lines, plain text and CSV, read into prompt records."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PromptRecord", "parse_bool", "read_prompts"]

_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


_TEXT_KEYS = ("caption", "Caption", "prompt", "Prompt", "text")


@dataclass
class PromptRecord:
    """One prompt: its text, its ground-truth label if the file gives one (1 = memorized),
    where it came from (``source``: the file's path, ``index``: its position among the file's prompts)."""

    text: str
    label: int | None
    source: str
    index: int
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.source}:{self.index}"


def parse_bool(value, *, where: str) -> int:
    """``1/0``, ``true/false``, ``yes/no`` (any case, JSON booleans too) as 1 or 0; anything else is an error."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise ValueError(f"{where}: 'memorized' must be one of 1/0/true/false/yes/no, got {value!r}")


def _label_from(obj: dict, where: str) -> int | None:
    if obj.get("memorized") not in (None, ""):
        return parse_bool(obj["memorized"], where=where)
    if obj.get("overfit_type") not in (None, ""):
        return 1
    return None


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, byte-order mark stripped); a clear error for binary or undecodable files."""
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ValueError(f"prompt file {str(path)!r} is a binary file (it holds NUL bytes), not UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt file {str(path)!r} is not UTF-8 text (undecodable byte at offset {err.start})") from None


def _read_jsonl(path: Path, text: str) -> list[PromptRecord]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno} must be a JSON object with a 'caption' field")
        key = next((k for k in _TEXT_KEYS if isinstance(obj.get(k), str)), None)
        if key is None:
            raise ValueError(f"{path}: line {lineno} has no 'caption' (or 'prompt') string field")
        meta = {k: v for k, v in obj.items() if k != key and isinstance(v, (str, int, float, bool))}
        out.append(PromptRecord(obj[key], _label_from(obj, f"{path}: line {lineno}"), str(path), len(out), meta))
    return out


def _read_csv(path: Path, text: str) -> list[PromptRecord]:
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    key = next((k for k in _TEXT_KEYS if k in (reader.fieldnames or [])), None)
    if key is None:
        raise ValueError(f"{path}: a CSV prompt file needs a 'Caption' column; found columns {reader.fieldnames}")
    out = []
    for row in reader:
        if row.get(key) is None:
            raise ValueError(f"{path}: row {reader.line_num} has no value in column {key!r}")
        if row[key].strip():
            out.append(PromptRecord(row[key], _label_from(row, f"{path}: row {reader.line_num}"), str(path), len(out),
                                    {k: v for k, v in row.items() if k != key and k is not None}))
    return out


def read_prompts(path: str | os.PathLike) -> list[PromptRecord]:
    """Read a prompt file (format from its suffix: ``.jsonl``/``.json``, ``.csv``, else plain text)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"prompt file {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl(path, text)
    elif suffix == ".csv":
        records = _read_csv(path, text)
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        records = [PromptRecord(line, None, str(path), i) for i, line in enumerate(lines)]
    if not records:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return records
