"""Leaderboards: every signal's detection metrics and cost on a labelled set of conditions.

:func:`evaluate_signals` runs each signal of :data:`~memgeo.detect.SIGNALS` on every
(condition, seed), and reports per signal the AUROC, TPR@1%FPR and TPR@3%FPR (strict
convention, named in the output), model evaluations and JVPs per sample, and wall time per
condition. Detection is per generation (one score per (condition, seed)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import detection_metrics
from .sampling import initial_noise
from .signals import GENERATION_SIGNALS, SIGNALS

__all__ = ["LeaderboardRow", "evaluate_signals", "format_leaderboard"]


@dataclass
class LeaderboardRow:
    signal: str
    auroc: float
    tpr1: float
    tpr3: float
    n_evals: int
    n_jvps: int
    seconds: float  # wall time per condition (all its seeds)
    convention: str
    scores: np.ndarray
    labels: np.ndarray


def evaluate_signals(
    model,
    conds: list,
    labels: list[int],
    *,
    signals=tuple(SIGNALS),
    seeds: int = 8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    options: dict | None = None,
    convention: str = "strict",
) -> list[LeaderboardRow]:
    """Every signal on every (condition, seed). ``options`` maps a signal name to extra keyword arguments."""
    if len(conds) == 0:
        raise ValueError("conds must hold at least one condition (it is empty)")
    if len(conds) != len(labels):
        raise ValueError(f"conds and labels must have the same length, got {len(conds)} and {len(labels)}")
    options = options or {}
    x_T = initial_noise(model, seeds)
    rows = []
    for name in signals:
        if name not in SIGNALS:
            raise ValueError(f"unknown signal {name!r}; choose from {sorted(SIGNALS)}")
        scores, y, seconds, res = [], [], 0.0, None
        for i, (c, lab) in enumerate(zip(conds, labels)):
            kw = {"n_steps": n_steps, **options.get(name, {})}
            if name in GENERATION_SIGNALS:
                kw.setdefault("guidance_scale", guidance_scale)
                kw["generator"] = torch.Generator().manual_seed(i)
            t0 = time.perf_counter()
            res = SIGNALS[name](model, c, x_T, **kw)
            seconds += time.perf_counter() - t0
            scores.append(res.score.detach().double().cpu().numpy())
            y += [int(lab)] * seeds
        s = np.concatenate(scores)
        y = np.array(y)
        m = detection_metrics(y, s, convention=convention)
        rows.append(LeaderboardRow(name, m["auroc"], m["tpr@1%fpr"], m["tpr@3%fpr"], res.n_evals, res.n_jvps,
                                   seconds / len(conds), convention, s, y))
    return rows


def format_leaderboard(rows: list[LeaderboardRow], *, title: str = "") -> str:
    """A markdown table of the rows, with cost ratios to the guidance norm where it is present."""
    base = next((r for r in rows if r.signal == "guidance_norm"), None)
    conv = rows[0].convention if rows else "strict"
    head = f"| signal | AUROC | TPR@1%FPR ({conv}) | TPR@3%FPR ({conv}) | evals/sample | JVPs/sample | s/condition |"
    if base:
        head += " time / guidance norm |"
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = f"| {r.signal} | {r.auroc:.3f} | {r.tpr1:.3f} | {r.tpr3:.3f} | {r.n_evals} | {r.n_jvps} | {r.seconds:.3f} |"
        if base:
            line += f" {r.seconds / base.seconds:.1f} |"
        lines.append(line)
    return "\n".join(lines)
