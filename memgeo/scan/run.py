"""Scan prompt sets on a score model: every requested signal per (prompt, seed), resumable.

Results go to a :class:`~memgeo.scan.ResultStore`: one row per (prompt text, seed, signal, settings
digest), appended as it is computed. A killed or interrupted scan resumes where it stopped; an
edited prompt file, another signal or other settings compute exactly what is missing; two scans on
one file never compute a row twice (the second waits for the first, then does what is left). Under
``accelerate launch`` each process takes the (prompt, signal) units that hash to its rank, writes
its own shard, and the main process merges the shards into the one output when all are done.

Every row is reproducible on its own: ``x_T`` comes from the seed, and the random directions of
the generation signals from a generator seeded by (prompt text, seed), so a value does not depend
on the order of the prompt file nor on which other seeds were computed beside it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int
from ..detect import DEFAULT_SIGNALS, PRESET_NAMES, PRESETS, SIGNALS
from ..sampling import initial_noise
from .readers import PromptRecord
from .store import ResultStore, settings_digest

__all__ = ["ScanConfig", "resolve_probe_times", "ScanInterrupted", "ScanResult", "model_identity", "unique_prompts", "run_scan"]


@dataclass
class ScanConfig:
    """Options of a scan: signal names, seeds, sampler steps, guidance scale and signal options.

    ``preset``: ``"memgeo"`` (defaults that hold on any model) or ``"official"`` (each paper's
    released settings). ``n_directions``: None takes the preset's; a number sets kappa-delta's directions per step
    and four times as many p-Laplace directions. ``options``: per signal, its own options
    (``{signal: {option: value}}``, the :class:`~memgeo.detect.SignalOption` entries of its registry entry: for
    example anisotropy's ``weights``, ``"auto"`` following the model's prediction type, and FLIPD's probe time
    ``t``, which :func:`resolve_probe_times` chooses from the scanned prompts where the preset says ``"auto"``).
    """

    signals: tuple[str, ...] = DEFAULT_SIGNALS
    seeds: tuple[int, ...] = (0,)
    n_steps: int = 50
    guidance_scale: float = 7.5
    n_directions: int | None = None
    preset: str = "memgeo"
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.signals, self.seeds = tuple(self.signals), tuple(int(s) for s in self.seeds)
        if not self.signals:
            raise ValueError("signals must name at least one signal")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; choose from {sorted(SIGNALS)}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must not repeat, got {self.seeds}")
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {PRESET_NAMES}, got {self.preset!r}")
        self.options = {name: dict(given) for name, given in dict(self.options).items()}
        for name, given in self.options.items():
            if name not in SIGNALS:
                raise ValueError(f"options names an unknown signal {name!r}; choose from {sorted(SIGNALS)}")
            known = {o.name: o for o in SIGNALS[name].extra}
            for key, value in given.items():
                if key not in known:
                    raise ValueError(f"options[{name!r}] has no option {key!r}; {name} takes {sorted(known) or 'none'}")
                if value is not None and known[key].choices is not None and value not in known[key].choices:
                    raise ValueError(f"options[{name!r}][{key!r}] must be one of {known[key].choices}, got {value!r}")

    def signal_options(self, name: str) -> dict:
        """The signal's own options: each given value, else its default; those left at None are not passed."""
        given = self.options.get(name, {})
        values = {o.name: given.get(o.name, o.default) for o in SIGNALS[name].extra}
        return {k: v for k, v in values.items() if v is not None}

    def signal_kwargs(self, name: str) -> dict:
        """Keyword arguments of ``SIGNALS[name]`` (without the random generator)."""
        kw = SIGNALS[name].options(n_steps=self.n_steps, preset=self.preset, guidance_scale=self.guidance_scale,
                                   n_directions=self.n_directions)
        kw.update(self.signal_options(name))
        return kw

    def settings(self, name: str, model) -> dict:
        """Everything that changes the value of ``name``: its keyword arguments, the math dtype and,
        for the generation signals, how their random directions are seeded."""
        out = {"signal": name, **self.signal_kwargs(name), "dtype": str(getattr(model, "dtype", ""))}
        base = SIGNALS[name].base or name
        if base in PRESETS:  # what the preset stands for, so a preset whose options change never mixes old rows
            out["preset_options"] = PRESETS[base][self.preset]
        if SIGNALS[name].generates:
            out["directions"] = "seeded by crc32(seed:prompt)"
        return out


def check_model_settings(model, cfg: ScanConfig) -> None:
    """Check the settings whose ranges depend on the model, once its configuration is read and before any
    evaluation: the number of sampler steps against its timesteps, and every signal option's own check
    (:attr:`~memgeo.detect.SignalOption.check`)."""
    T = getattr(getattr(model, "schedule", None), "num_train_timesteps", None)
    if T is not None and not 1 <= cfg.n_steps <= T:
        raise ValueError(f"--steps must lie in [1, {T}] for this model (its timesteps), got {cfg.n_steps}")
    for name in cfg.signals:
        given = cfg.options.get(name, {})
        for option in SIGNALS[name].extra:
            if option.check is not None and given.get(option.name) is not None:
                option.check(model, given[option.name])


def resolve_probe_times(model, cfg: ScanConfig, texts) -> ScanConfig:
    """``cfg`` with every probe time fixed that a scanned signal chooses from the prompts it scores
    (:attr:`~memgeo.detect.SignalSpec.probe_time`; FLIPD's ``t`` under a preset that says ``"auto"``): chosen once
    from ``texts`` (the scanned prompts, or unlabelled reference prompts), so that every row is probed at one time
    and that time is part of each row's settings digest."""
    options = {name: dict(given) for name, given in cfg.options.items()}
    for name in cfg.signals:
        given = cfg.signal_options(name)
        fixed = SIGNALS[name].fixed_options(model, texts, preset=cfg.preset, guidance_scale=cfg.guidance_scale,
                                            n_steps=cfg.n_steps, options=given)
        if fixed != given:
            options.setdefault(name, {}).update({k: v for k, v in fixed.items() if given.get(k) != v})
    return dataclasses.replace(cfg, options=options)


class ScanInterrupted(KeyboardInterrupt):
    """A scan stopped by Ctrl-C; every row finished before it is saved."""

    def __init__(self, saved: int, asked: int, path: Path):
        super().__init__(f"{saved} of {asked} results are saved in {path}")
        self.saved, self.asked, self.path = saved, asked, path


@dataclass
class ScanResult:
    """What a scan asked for and the store holding it: :meth:`rows` and :meth:`scores` return
    exactly the requested (prompt, seed, signal, settings), whatever else the file holds."""

    store: ResultStore
    prompts: list[PromptRecord]
    config: ScanConfig
    digests: dict[str, str]

    def rows(self, signal: str) -> list[dict | None]:
        """Rows of ``signal`` in (prompt, seed) order; None where a row is missing."""
        dg = self.digests[signal]
        return [self.store.get(p.text, s, signal, dg) for p in self.prompts for s in self.config.seeds]

    def scores(self, signal: str) -> np.ndarray:
        """Scores ``[prompts, seeds]`` (NaN where missing or undefined)."""
        vals = [np.nan if r is None or r["score"] is None else float(r["score"]) for r in self.rows(signal)]
        return np.array(vals, dtype=float).reshape(len(self.prompts), len(self.config.seeds))


def model_identity(model) -> dict:
    """``{"name", "fingerprint"}`` of a score model (its ``identity`` where it has one), with the LoRA pairing where
    one was loaded (:func:`~memgeo.testbed.folder.lora_base_check`), so the store's header records it."""
    ident = getattr(model, "identity", None)
    ident = dict(ident) if isinstance(ident, dict) else {"name": type(model).__name__, "fingerprint": None}
    pairing = getattr(model, "lora_pairing", None)
    return {**ident, "lora_pairing": pairing} if pairing is not None else ident


def unique_prompts(records: list[PromptRecord]) -> list[PromptRecord]:
    """One record per prompt text (first occurrence kept, with a warning when any repeats).

    A text labelled memorized in one place and ordinary in another is an error naming both places.
    """
    seen: dict[str, PromptRecord] = {}
    for r in records:
        first = seen.get(r.text)
        if first is None:
            seen[r.text] = r
            continue
        if r.label is not None and first.label is not None and r.label != first.label:
            raise ValueError(f"the prompt {r.text!r} is labelled {first.label} at {first.key} and {r.label} at {r.key}; "
                             f"a prompt can have one label only")
        if first.label is None and r.label is not None:
            seen[r.text] = PromptRecord(first.text, r.label, first.source, first.index, first.meta)
    if len(seen) < len(records):
        warnings.warn(f"{len(records) - len(seen)} prompt(s) appear more than once; each prompt is scanned and "
                      f"counted once", stacklevel=3)
    return list(seen.values())


def _row_generator(prompt: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{prompt}".encode()))  # stable across processes


def _compute_rows(model, batch: list[tuple[str, list[int]]], name: str, cfg: ScanConfig, digest: str):
    """Rows of one signal for ``batch``, a list of (prompt, seeds).

    Batched signals (``SIGNALS[name].batched``) evaluate the whole batch in one call, one row per (prompt, seed)
    with per-row prompts. The generation signals draw their random directions from one generator per row,
    seeded by its prompt and seed, so that a row never depends on its neighbours: its value is the one it has
    alone.
    """
    kw = cfg.signal_kwargs(name)
    if SIGNALS[name].batched:
        groups = [[(p, s) for p, seeds in batch for s in seeds]]
    else:
        groups = [[(p, s)] for p, seeds in batch for s in seeds]
    for group in groups:
        if SIGNALS[name].generates:
            kw["generator"] = [_row_generator(p, s) for p, s in group]
        x_T = torch.cat([initial_noise(model, [s]) for _, s in group])
        cond = group[0][0] if len(group) == 1 else [p for p, _ in group]
        t0 = time.perf_counter()
        res = SIGNALS[name](model, cond, x_T, **kw)
        sec = (time.perf_counter() - t0) / len(group)
        per_sample = {k: v for k, v in res.extras.items()
                      if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == len(group)}
        for i, (prompt, seed) in enumerate(group):
            yield {
                "prompt": prompt, "seed": int(seed), "signal": name, "digest": digest,
                "score": float(res.score[i]), "value": float(res.value[i]),
                "extras": {k: float(v[i]) for k, v in per_sample.items()},
                "n_evals": int(res.n_evals), "n_jvps": int(res.n_jvps), "seconds": sec,
            }


def _process_state():
    """(rank, world size, barrier) under ``accelerate launch``; (0, 1, no-op) otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state.wait_for_everyone


def _notice_other_seeds(store, prompts, cfg: ScanConfig, digests: dict) -> None:
    """Say (on stderr) when ``store`` holds rows of these prompts and settings at seeds this scan does not ask for
    (a store written with other seeds, such as a testbed scanned before its scoring seeds were fixed): they stay in
    the file and are not read into this result."""
    texts, wanted = {p.text for p in prompts}, set(cfg.seeds)
    other = sorted({seed for (text, seed, name, digest) in store.rows
                    if text in texts and name in digests and digest == digests[name] and seed not in wanted})
    if other:
        print(f"memgeo: {store.path} also holds these prompts at seeds {_seed_text(other)}, which this scan does not "
              f"use (its seeds: {_seed_text(cfg.seeds)}); those rows stay in the file and are left out of this result",
              file=sys.stderr)


def _seed_text(seeds) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds[:8])) + (", ..." if len(seeds) > 8 else "")


def run_scan(model, records: list[PromptRecord], out: str | Path, cfg: ScanConfig, *, progress: bool = True,
             timeout: float | None = None, batch_size: int = 8, desc: str = "scan") -> ScanResult:
    """Compute ``cfg.signals`` for every (prompt, seed) not yet in the store ``out``.

    ``batch_size`` prompts (all their missing seeds) go through the model in one call for the
    batched signals (``SIGNALS[name].batched``); the values equal those of ``batch_size=1`` (to round-off).
    Raises :class:`ScanInterrupted` (a ``KeyboardInterrupt``) on Ctrl-C, after which the same call
    resumes. ``timeout``: how long to wait for another process writing ``out`` (None: as long as it takes).
    """
    batch_size = check_int("batch_size", batch_size)
    from tqdm.auto import tqdm

    if not records:
        raise ValueError("records is empty: there are no prompts to scan")
    prompts = unique_prompts(records)
    check_model_settings(model, cfg)  # before the probe times, which generate
    cfg = resolve_probe_times(model, cfg, [p.text for p in prompts])
    rank, world, barrier = _process_state()
    ident = model_identity(model)
    digests = {name: settings_digest(cfg.settings(name, model)) for name in cfg.signals}
    out = Path(out)
    with ResultStore(out, model=ident, rank=rank if world > 1 else None, timeout=timeout) as store:
        units = []
        for rec in prompts:
            for name in cfg.signals:
                if world > 1 and zlib.crc32(f"{name}:{rec.text}".encode()) % world != rank:
                    continue  # another process's unit
                missing = [s for s in cfg.seeds if not store.done(rec.text, s, name, digests[name])]
                if missing:
                    units.append((rec.text, name, missing))
        asked = sum(len(m) for *_, m in units)
        if rank == 0:
            _notice_other_seeds(store, prompts, cfg, digests)
        written = 0
        batches = []  # (signal, [(prompt, seeds), ...]): up to batch_size prompts of one signal
        for name in cfg.signals:
            mine = [(text, seeds) for text, n, seeds in units if n == name]
            step = batch_size if SIGNALS[name].batched else 1
            batches += [(name, mine[i:i + step]) for i in range(0, len(mine), step)]
        bar = tqdm(total=asked, desc=f"{desc}[{rank}]" if world > 1 else desc, disable=not progress, unit="row")
        try:
            for name, batch in batches:
                for row in _compute_rows(model, batch, name, cfg, digests[name]):
                    written += store.append(row)
                    bar.update(1)
        except KeyboardInterrupt:
            raise ScanInterrupted(written, asked, store.write_path) from None
        finally:
            bar.close()
    barrier()
    if world > 1 and rank == 0:
        with ResultStore(out, model=ident) as main:
            main.merge_shards()
    barrier()
    return ScanResult(ResultStore.read(out, model=ident), prompts, cfg, digests)
