"""Readers for the community's prompt files, and a resumable JSON-lines result store.

Prompt formats:

* JSON lines (``.jsonl``, ``.json``): one object per line with a ``caption`` (or ``prompt``)
  field; an ``overfit_type`` field (``"TV"``, ``"MV"``, ...) or a boolean ``memorized`` field
  marks the prompt as memorized;
* plain text (``.txt`` or anything else): one prompt per line, blank lines skipped;
* CSV (``.csv``): a ``Caption`` (or ``caption``/``prompt``) column, ``,`` or ``;`` separated.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PromptRecord", "read_prompts", "ResultStore"]

_TEXT_KEYS = ("caption", "Caption", "prompt", "Prompt", "text")


@dataclass
class PromptRecord:
    """One prompt: its text, its ground-truth label if the file gives one (1 = memorized),
    where it came from (``source``, ``index``: its position among the file's prompts)."""

    text: str
    label: int | None
    source: str
    index: int
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.source}:{self.index}"


def _label_from(obj: dict) -> int | None:
    if "memorized" in obj:
        return int(bool(obj["memorized"]))
    if obj.get("overfit_type") not in (None, ""):
        return 1
    return None


def _read_jsonl(path: Path) -> list[PromptRecord]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
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
        out.append(PromptRecord(obj[key], _label_from(obj), path.name, len(out), meta))
    return out


def _read_csv(path: Path) -> list[PromptRecord]:
    text = path.read_text(encoding="utf-8-sig")
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
            out.append(PromptRecord(row[key], _label_from(row), path.name, len(out),
                                    {k: v for k, v in row.items() if k != key and k is not None}))
    return out


def read_prompts(path: str | os.PathLike) -> list[PromptRecord]:
    """Read a prompt file (format from its suffix: ``.jsonl``/``.json``, ``.csv``, else plain text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl(path)
    elif suffix == ".csv":
        records = _read_csv(path)
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [PromptRecord(line.strip(), None, path.name, i) for i, line in enumerate(ln for ln in lines if ln.strip())]
    if not records:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return records


class ResultStore:
    """Append-only JSON-lines results keyed by ``(key, seed)``; resumes where a run stopped.

    Each line is written and flushed whole. A trailing line cut off by a kill is dropped on open
    (and truncated away), so a resumed run neither loses nor duplicates a result. Shard files
    ``<out>.part-<rank>`` hold the lines of parallel processes until :meth:`merge_shards`.
    """

    def __init__(self, path: str | os.PathLike, *, rank: int | None = None):
        self.path = Path(path)
        self.rank = rank
        self.write_path = self.path if rank is None else self.path.with_name(f"{self.path.name}.part-{rank}")
        self.write_path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[tuple[str, int], dict] = {}
        for p in [self.path, *self._shards()]:
            self._load(p, repair=(p == self.write_path))

    def _shards(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.part-*"))

    def _load(self, path: Path, *, repair: bool) -> None:
        if not path.exists():
            return
        raw = path.read_bytes()
        good = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a cut-off last line
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            self.rows.setdefault((row["key"], int(row["seed"])), row)
            good += len(line)
        if repair and good < len(raw):
            with open(path, "r+b") as fh:
                fh.truncate(good)

    def done(self, key: str, seed: int) -> bool:
        return (key, int(seed)) in self.rows

    def append(self, row: dict) -> None:
        k = (row["key"], int(row["seed"]))
        if k in self.rows:
            return
        with open(self.write_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[k] = row

    def merge_shards(self) -> None:
        """Fold every shard into the main file (no duplicates) and remove the shards."""
        seen = set()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                seen.add((row["key"], int(row["seed"])))
        with open(self.path, "a", encoding="utf-8") as out:
            for shard in self._shards():
                for line in shard.read_text(encoding="utf-8").splitlines(keepends=True):
                    if not line.endswith("\n"):
                        break
                    row = json.loads(line)
                    k = (row["key"], int(row["seed"]))
                    if k not in seen:
                        out.write(line)
                        seen.add(k)
            out.flush()
            os.fsync(out.fileno())
        for shard in self._shards():
            shard.unlink()
