"""Scan prompt sets on a score model: every requested signal per (prompt, seed), resumable.

Results are appended one JSON line per (prompt, seed) as they are computed, so a killed scan
resumes where it stopped with nothing lost or duplicated. Under ``accelerate launch`` each
process takes every ``num_processes``-th pending (prompt, seed) pair, writes its own shard,
and the main process merges the shards into the one output when all are done.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .detect import GENERATION_SIGNALS, SIGNALS, detection_metrics, initial_noise
from .io import PromptRecord, ResultStore

__all__ = ["ScanConfig", "run_scan", "summarize", "prompt_scores", "plot_roc"]


@dataclass
class ScanConfig:
    """Options of a scan: signal names, seeds, sampler steps, guidance scale and signal options."""

    signals: tuple[str, ...] = ("guidance_norm", "anisotropy", "sharpness")
    seeds: tuple[int, ...] = (0,)
    n_steps: int = 50
    guidance_scale: float = 7.5
    anisotropy_weights: str = "sd1"
    n_directions: int = 4

    def __post_init__(self):
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; choose from {sorted(SIGNALS)}")
        if not self.signals:
            raise ValueError("signals must name at least one signal")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")


def _signal_kwargs(name: str, cfg: ScanConfig, key: str) -> dict:
    kw: dict = {"n_steps": cfg.n_steps}
    if name == "anisotropy":
        kw["weights"] = cfg.anisotropy_weights
    if name in GENERATION_SIGNALS:
        kw["guidance_scale"] = cfg.guidance_scale
        kw["generator"] = torch.Generator().manual_seed(zlib.crc32(key.encode()))  # stable across processes
    if name in ("p_laplace", "kappa_delta"):
        kw["n_directions"] = cfg.n_directions if name == "kappa_delta" else max(2, 4 * cfg.n_directions)
    return kw


def _process_state():
    """(rank, world size, barrier) under ``accelerate launch``; (0, 1, no-op) otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state.wait_for_everyone


def run_scan(model, records: list[PromptRecord], out: str | Path, cfg: ScanConfig, *, progress: bool = True) -> ResultStore:
    """Compute ``cfg.signals`` for every (prompt, seed) not yet in ``out``; returns the store."""
    from tqdm.auto import tqdm

    if not records:
        raise ValueError("the prompt list is empty")
    rank, world, barrier = _process_state()
    store = ResultStore(out, rank=rank if world > 1 else None)
    pending = [(r, s) for r in records for s in cfg.seeds if not store.done(r.key, s)]
    mine = pending[rank::world]
    by_prompt: dict[str, list] = {}
    for r, s in mine:
        by_prompt.setdefault(r.key, [r, []])[1].append(s)
    bar = tqdm(total=len(mine), desc=f"scan[{rank}]" if world > 1 else "scan", disable=not progress, unit="gen")
    for rec, seeds in by_prompt.values():
        x_T = initial_noise(model, seeds)
        results = {}
        for name in cfg.signals:
            t0 = time.perf_counter()
            res = SIGNALS[name](model, rec.text, x_T, **_signal_kwargs(name, cfg, rec.key))
            results[name] = (res, (time.perf_counter() - t0) / len(seeds))
        for i, seed in enumerate(seeds):
            store.append({
                "key": rec.key, "seed": int(seed), "prompt": rec.text, "label": rec.label, "source": rec.source,
                "signals": {
                    n: {"score": float(r.score[i]), "value": float(r.value[i]), "n_evals": r.n_evals,
                        "n_jvps": r.n_jvps, "seconds": sec}
                    for n, (r, sec) in results.items()
                },
            })
        bar.update(len(seeds))
    bar.close()
    barrier()
    if world > 1 and rank == 0:
        store.merge_shards()
    barrier()
    return ResultStore(out) if world > 1 else store


def prompt_scores(store: ResultStore, signal: str):
    """Per prompt: (labels, mean score over its seeds, keys)."""
    acc: dict[str, list] = {}
    for (key, _), row in store.rows.items():
        if signal in row["signals"]:
            acc.setdefault(key, [row["label"], []])[1].append(row["signals"][signal]["score"])
    keys = sorted(acc)
    return [acc[k][0] for k in keys], np.array([np.mean(acc[k][1]) for k in keys]), keys


def summarize(store: ResultStore, signals, *, convention: str = "strict") -> tuple[str, dict]:
    """A summary table (and, with both labels present, AUROC / TPR@1%FPR / TPR@3%FPR per signal)."""
    rows = list(store.rows.values())
    lines = [f"{len({r['key'] for r in rows})} prompts, {len(rows)} generations "
             f"(metrics per prompt, score averaged over its seeds; TPR convention: {convention})", ""]
    head = f"{'signal':<14} {'mean score':>11} {'UNet evals':>10} {'JVPs':>5} {'s/gen':>8}"
    labels_all = [r["label"] for r in rows]
    labelled = all(lab is not None for lab in labels_all) and len(set(labels_all)) == 2
    if labelled:
        head += f" {'mean (mem)':>11} {'mean (ord)':>11} {'AUROC':>7} {'TPR@1%':>7} {'TPR@3%':>7}"
    lines += [head, "-" * len(head)]
    metrics = {}
    for name in signals:
        vals = [r["signals"][name] for r in rows if name in r["signals"]]
        if not vals:
            continue
        line = (f"{name:<14} {np.mean([v['score'] for v in vals]):11.4g} {vals[0]['n_evals']:10d} "
                f"{vals[0]['n_jvps']:5d} {np.mean([v['seconds'] for v in vals]):8.3f}")
        if labelled:
            y, s, _ = prompt_scores(store, name)
            y = np.array(y, dtype=int)
            m = detection_metrics(y, s, convention=convention)
            metrics[name] = {**m, "labels": y, "scores": s}
            line += (f" {s[y == 1].mean():11.4g} {s[y == 0].mean():11.4g} {m['auroc']:7.3f} "
                     f"{m['tpr@1%fpr']:7.3f} {m['tpr@3%fpr']:7.3f}")
        lines.append(line)
    return "\n".join(lines), metrics


def plot_roc(metrics: dict, path: str | Path, *, title: str = "ROC, per prompt") -> Path:
    """ROC curves of every signal with labels, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .detect import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, m in metrics.items():
        f, t, _ = roc_curve(m["labels"], m["scores"])
        ax.plot(f, t, label=f"{name} (AUROC {m['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
