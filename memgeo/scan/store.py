"""The result store: one row per (prompt, seed, signal, settings digest), appended, locked, resumable."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .._util import atomic_write_text

__all__ = ["STORE_FORMAT", "STORE_VERSION", "settings_digest", "ResultStore"]


STORE_FORMAT = "memgeo-results"

STORE_VERSION = 2


def settings_digest(settings: dict) -> str:
    """A short digest of the settings that change a result's value (order of keys does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _row_key(row: dict) -> tuple[str, int, str, str]:
    return row["prompt"], int(row["seed"]), row["signal"], row["digest"]


def _check_row(row, where: str) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where} is not a result row (a JSON object)")
    for k, kind in (("prompt", str), ("seed", int), ("signal", str), ("digest", str)):
        if not isinstance(row.get(k), kind) or isinstance(row.get(k), bool):
            raise ValueError(f"{where} is not a result row (its {k!r} field is missing or not a {kind.__name__})")
    return row


class ResultStore:
    """A JSON-lines result file that is safe by construction.

    * Line 1 is a header ``{"format": "memgeo-results", "version": 2, "model": {...}}``. A file
      without it is never written to: opening it raises an error that names it, and it is left as
      it is. A store of another model (another fingerprint) is refused the same way.
    * Rows are keyed by content: ``(prompt text, seed, signal, settings digest)``, so an edited
      prompt file, a new signal or new settings compute exactly what is missing, and a summary
      reports exactly the rows asked for.
    * Rows are appended and flushed one at a time. A last line cut off by a kill is removed when a
      writer opens the store (it is recomputed); a bad line anywhere else is an error naming the
      line, and nothing is deleted.
    * A writer holds a lock (``<file>.lock``, :mod:`filelock`) while the store is open: a second
      writer waits for the first to finish (``timeout`` seconds at most; ``None`` waits as long as
      it takes) and then computes only what the first left missing.
    * With ``rank``, rows go to the shard ``<file>.part-<rank>`` (parallel processes under
      ``accelerate``); :meth:`merge_shards` folds the shards into the file, without duplicates.

    Use as a context manager for writing (``with ResultStore(path, model=identity) as store``), or
    :meth:`read` to read without a lock.
    """

    def __init__(self, path: str | os.PathLike, *, model: dict | None = None, rank: int | None = None,
                 timeout: float | None = None, writable: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"result file {str(self.path)!r} is a directory; give a file path")
        self.model = model
        self.rank = rank
        self.writable = writable
        self.write_path = self.path if rank is None else self.path.with_name(f"{self.path.name}.part-{rank}")
        self.rows: dict[tuple[str, int, str, str], dict] = {}
        self._own: set[tuple[str, int, str, str]] = set()  # keys stored in write_path itself
        self._lock = None
        if writable:
            from filelock import FileLock, Timeout

            self.write_path.parent.mkdir(parents=True, exist_ok=True)
            self._check_header(self.path)  # refuse a foreign --out before taking any lock
            self._lock = FileLock(str(self.write_path) + ".lock")
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                print(f"memgeo: waiting for the process that is writing {self.write_path} "
                      f"(lock {self.write_path}.lock) to finish", file=sys.stderr)
                try:
                    self._lock.acquire(timeout=-1 if timeout is None else timeout)
                except Timeout:
                    raise TimeoutError(f"another process is still writing {str(self.write_path)!r} after {timeout} s; "
                                       f"wait for it, or choose another result file") from None
        try:
            for p in [self.path, *self._shards()]:
                self._load(p, repair=writable and p == self.write_path)
            if writable and _is_empty(self.write_path):
                self._create_header(self.write_path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def read(cls, path: str | os.PathLike, *, model: dict | None = None) -> "ResultStore":
        """Open a store for reading only (no lock; a cut-off last line is skipped, not removed)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"result file {str(path)!r} does not exist")
        return cls(path, model=model, writable=False)

    # ------------------------------------------------------------------ context
    def close(self) -> None:
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ header and loading
    def _header(self) -> dict:
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "model": self.model}

    def _create_header(self, path: Path) -> None:
        """Write the header as the whole file, atomically (a kill leaves no partial header)."""
        atomic_write_text(path, json.dumps(self._header()) + "\n")

    def _check_header(self, path: Path) -> None:
        """Validate ``path``'s header against this store's model (a missing or empty file passes)."""
        if path.is_dir():
            raise IsADirectoryError(f"result file {str(path)!r} is a directory; give a file path")
        if _is_empty(path):
            return
        with open(path, "rb") as fh:
            first = fh.readline()
        try:
            head = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError):
            head = None
        if not isinstance(head, dict) or head.get("format") != STORE_FORMAT:
            raise ValueError(f"{str(path)!r} is not a memgeo result store (its first line is not a memgeo header); "
                             f"it was left untouched: choose another result file")
        if head.get("version") != STORE_VERSION:
            raise ValueError(f"{str(path)!r} is a memgeo result store of format version {head.get('version')}, "
                             f"this memgeo reads version {STORE_VERSION}; choose another result file")
        theirs = head.get("model") or {}
        if self.model is not None and theirs and _model_differs(theirs, self.model):
            raise ValueError(f"{str(path)!r} holds results of the model {theirs.get('name')!r} "
                             f"(fingerprint {theirs.get('fingerprint')}), not of {self.model.get('name')!r} "
                             f"(fingerprint {self.model.get('fingerprint')}); choose another result file")
        if self.model is None:
            self.model = theirs or None

    def _shards(self) -> list[Path]:
        return sorted(p for p in self.path.parent.glob(f"{self.path.name}.part-*") if not p.name.endswith(".lock"))

    def _load(self, path: Path, *, repair: bool) -> None:
        if not path.exists():
            return
        self._check_header(path)
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        torn = lines.pop()  # the bytes after the last newline: b"" when the file ends cleanly
        if torn and repair:
            with open(path, "r+b") as fh:  # a row cut off by a kill: it will be recomputed
                fh.truncate(len(raw) - len(torn))
        for lineno, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            where = f"{path}: line {lineno}"
            try:
                row = _check_row(json.loads(line), where)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{where} is not valid JSON ({err}); the file was left as it is: "
                                 f"fix or remove that line to use it") from None
            self.rows.setdefault(_row_key(row), row)
            if path == self.write_path:
                self._own.add(_row_key(row))

    # ------------------------------------------------------------------ rows
    def done(self, prompt: str, seed: int, signal: str, digest: str) -> bool:
        return (prompt, int(seed), signal, digest) in self.rows

    def get(self, prompt: str, seed: int, signal: str, digest: str) -> dict | None:
        return self.rows.get((prompt, int(seed), signal, digest))

    def append(self, row: dict) -> bool:
        """Append one row (flushed and synced to disk); returns False if that key is already stored."""
        if not self.writable:
            raise ValueError(f"the result store {str(self.path)!r} was opened for reading only")
        k = _row_key(_check_row(row, "row"))
        if k in self.rows:
            return False
        self._write(k, row)
        return True

    def _write(self, k, row: dict) -> None:
        line = json.dumps(row, allow_nan=True) + "\n"
        with open(self.write_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[k] = row
        self._own.add(k)

    def merge_shards(self) -> None:
        """Fold every shard into the main file (no duplicates) and remove the shards.

        Call it on the main file opened for writing (it holds the main file's lock); a shard's
        cut-off last line is left out (it is recomputed by the next run).
        """
        if not self.writable or self.rank is not None:
            raise ValueError("merge_shards needs the main result file opened for writing (no rank)")
        for shard in self._shards():
            for k, row in ResultStore.read(shard, model=self.model).rows.items():
                if k not in self._own:
                    self._write(k, row)
        for shard in self._shards():
            shard.unlink()
            Path(str(shard) + ".lock").unlink(missing_ok=True)


def _is_empty(path: Path) -> bool:
    return not path.exists() or path.stat().st_size == 0


def _model_differs(a: dict, b: dict) -> bool:
    fa, fb = a.get("fingerprint"), b.get("fingerprint")
    if fa and fb:
        return fa != fb
    return a.get("name") != b.get("name")
