"""A leaderboard's row (one signal's scores on every (prompt, seed)) and its metrics regrouped per prompt or on a
subset of prompts: what the leaderboard, the cost front and the pooled table read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..detect import bootstrap_metrics, detection_metrics

__all__ = ["LeaderboardRow", "regroup"]


@dataclass
class LeaderboardRow:
    signal: str
    auroc: float
    tpr1: float
    tpr3: float
    n_evals: int
    n_jvps: int
    seconds: float  # wall time per condition (all its seeds): median of warmed-up repeats
    convention: str
    scores: np.ndarray
    labels: np.ndarray
    intervals: dict | None = None  # 95% bootstrap intervals over prompts: {"auroc": (lo, hi), "tpr@1%fpr": ...}
    spearman: float | None = None  # rank correlation of the per-prompt score with the memorization rate


def _by_prompt(row: LeaderboardRow, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """A row's scores as ``[prompts, seeds]`` and each prompt's label ``[prompts]`` (rows are prompt-major)."""
    s = np.asarray(row.scores, dtype=float)
    if s.size % seeds:
        raise ValueError(f"the row holds {s.size} scores, not a multiple of seeds={seeds}")
    return s.reshape(-1, seeds), np.asarray(row.labels).reshape(-1, seeds)[:, 0]


def regroup(row: LeaderboardRow, *, seeds: int, keep=None, per_prompt: bool = False, n_boot: int = 1000) -> LeaderboardRow:
    """The row's metrics recomputed on a subset of its prompts (``keep``: a boolean mask or indices
    over prompts) and/or per prompt (``per_prompt``: each prompt scored by the mean over its seeds).

    Rows hold one score per (prompt, seed), prompt-major, as :func:`evaluate_signals` makes them.
    """
    s, y = _by_prompt(row, seeds)
    if keep is not None:
        s, y = s[np.asarray(keep)], y[np.asarray(keep)]
    if per_prompt:
        scores, labels, groups = s.mean(1), y, np.arange(len(y))
    else:
        scores, labels, groups = s.reshape(-1), np.repeat(y, seeds), np.repeat(np.arange(len(y)), seeds)
    m = detection_metrics(labels, scores, convention=row.convention)
    ci = bootstrap_metrics(labels, scores, groups=groups, convention=row.convention, n_boot=n_boot)
    return dataclasses.replace(row, auroc=m["auroc"], tpr1=m["tpr@1%fpr"], tpr3=m["tpr@3%fpr"], scores=scores,
                               labels=labels, intervals=ci)
