"""The leaderboards' tables: every signal's row, the per-prompt and per-kind breakdown, and the every-kind targets
(memgeo's detectors at a small budget against the published signals)."""

from __future__ import annotations

import numpy as np

from ..detect import COST_REFERENCE, SIGNALS, detection_metrics
from .front import cost_of, is_free
from .rows import LeaderboardRow, _by_prompt, regroup

__all__ = ["format_leaderboard", "format_breakdown", "compare_targets", "floor_target", "every_kind_targets",
           "format_every_kind_targets"]


def format_leaderboard(rows: list[LeaderboardRow], *, title: str = "") -> str:
    """A markdown table of the rows (with 95% bootstrap intervals over prompts where computed), and
    cost ratios to the guidance norm where it is present."""
    base = next((r for r in rows if r.signal == COST_REFERENCE), None)
    conv = rows[0].convention if rows else "strict"
    head = f"| signal | AUROC | TPR@1%FPR ({conv}) | TPR@3%FPR ({conv}) | evals/sample | JVPs/sample | s/condition |"
    if base:
        head += " time / guidance norm |"
    graded = any(r.spearman is not None for r in rows)
    if graded:
        head += " Spearman with memorization rate |"
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + "---|" * (head.count("|") - 1)]

    def cell(r, key, value):
        if r.intervals is None:
            return f"{value:.3f}"
        lo, hi = r.intervals[key]
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"

    for r in rows:
        line = (f"| {r.signal} | {cell(r, 'auroc', r.auroc)} | {cell(r, 'tpr@1%fpr', r.tpr1)} | "
                f"{cell(r, 'tpr@3%fpr', r.tpr3)} | {_evals(r)} | {r.n_jvps} | {r.seconds:.3f} |")
        if base:
            line += f" {r.seconds / base.seconds:.1f} |"
        if graded:
            line += f" {'' if r.spearman is None else f'{r.spearman:.3f}'} |"
        lines.append(line)
    if any(r.intervals is not None for r in rows):
        lines += ["", "Brackets: 95% bootstrap intervals, resampling prompts within each class (1000 replicates)."]
    return "\n".join(lines)


def _evals(row: LeaderboardRow) -> str:
    """A row's evaluations per sample, with "0 extra" for a signal that reads a generation run anyway."""
    return f"{row.n_evals} (0 extra)" if is_free(row) else str(row.n_evals)


def format_breakdown(rows: list[LeaderboardRow], *, seeds: int, groups: dict, title: str = "") -> str:
    """Per-prompt metrics of every row, overall and on subsets of the positives.

    ``groups`` maps a column name (a kind of memorization, say) to a boolean mask over prompts
    selecting that subset's positives; every negative is kept in each column. Cells are per-prompt
    AUROC with its 95% bootstrap interval; the first two columns are per-prompt AUROC and
    TPR@1%FPR over every prompt.
    """
    conv = rows[0].convention if rows else "strict"
    names = list(groups)
    head = (f"| signal | AUROC per prompt | TPR@1%FPR per prompt ({conv}) | "
            + " | ".join(f"AUROC: {n}" for n in names) + " |")
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + "---|" * (head.count("|") - 1)]

    def ci(r, key, value):
        lo, hi = r.intervals[key]
        return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"

    for r in rows:
        p = regroup(r, seeds=seeds, per_prompt=True)
        cells = [ci(p, "auroc", p.auroc), ci(p, "tpr@1%fpr", p.tpr1)]
        y = _by_prompt(r, seeds)[1]
        for n in names:
            keep = (y == 0) | np.asarray(groups[n], dtype=bool)
            if keep[y == 1].sum() == 0:
                cells.append("-")
                continue
            k = regroup(r, seeds=seeds, keep=keep, per_prompt=True)
            cells.append(ci(k, "auroc", k.auroc))
        lines.append(f"| {r.signal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_targets(aurocs: dict, costs: dict, *, max_evals: int = 4, tolerance: float = 0.02) -> list[dict]:
    """The every-kind targets from AUROCs already measured: ``aurocs[signal][column]`` (``"overall"`` first, then each
    kind's column and ``"hard negatives"`` where present), ``costs[signal]`` evaluations per sample. Per memgeo signal
    (``own`` in :data:`~memgeo.detect.SIGNALS`) at most ``max_evals``: at least every published signal at that budget
    overall, within ``tolerance`` of the best of them on every other column. Signals outside the registry are left
    out."""
    signals = [s for s in aurocs if s in SIGNALS and costs[s] <= max_evals]
    ours = [s for s in signals if SIGNALS[s].own]
    published = [s for s in signals if not SIGNALS[s].own]
    if not ours or not published:
        return []
    columns = list(aurocs[published[0]])
    best = {}  # per column, the best published signal and its AUROC: the same for every memgeo signal
    for name in columns:
        top = max(published, key=lambda s: aurocs[s][name])
        best[name] = (top, aurocs[top][name])
    out = []
    for signal in ours:
        (top, theirs), mine = best["overall"], aurocs[signal]["overall"]
        row = {"signal": signal, "evals": int(costs[signal]), "overall": mine, "best_published": top,
               "best_published_auroc": theirs, "overall_met": bool(mine >= theirs), "kinds": {}}
        for name in columns[1:]:
            (top, theirs), mine = best[name], aurocs[signal][name]
            row["kinds"][name] = {"auroc": mine, "best_published": top, "best_published_auroc": theirs,
                                  "met": bool(mine >= theirs - tolerance)}
        row["met"] = row["overall_met"] and all(k["met"] for k in row["kinds"].values())
        out.append(row)
    return out


def floor_target(points: list[dict], *, max_evals: int = 16, floor: float = 0.98) -> dict:
    """The budget floor: the best memgeo detector at most ``max_evals`` evaluations per sample, its overall AUROC
    against ``floor``. ``points``: ``{"signal", "evals", "auroc", "own"}`` per signal (a cost front's points); where no
    memgeo detector within the budget has an AUROC, ``signal`` is None and the target is not met."""
    mine = [q for q in points if q["own"] and q["evals"] <= max_evals and np.isfinite(q["auroc"])]
    if not mine:
        return {"signal": None, "evals": None, "auroc": float("nan"), "floor": floor, "max_evals": max_evals,
                "met": False}
    top = max(mine, key=lambda q: q["auroc"])
    return {"signal": top["signal"], "evals": int(top["evals"]), "auroc": float(top["auroc"]), "floor": floor,
            "max_evals": max_evals, "met": bool(top["auroc"] >= floor)}


def every_kind_targets(rows: list[LeaderboardRow], *, seeds: int, groups: dict, max_evals: int = 4,
                       tolerance: float = 0.02, hard: list | None = None) -> list[dict]:
    """:func:`compare_targets` on a leaderboard's rows: per-prompt AUROC (the mean score over seeds) overall, on each
    kind (``groups``, as in :func:`format_breakdown`: a column's positives, every negative kept) and, where ``hard``
    (one flag per prompt) names hard negatives, on the memorized prompts against those alone. Costs as the cost
    front counts them (:func:`~memgeo.experiments.front.cost_of`: a free signal 0). The caption-only baseline is no
    signal and is left out."""

    def per_prompt(r, keep):
        s, y = _by_prompt(r, seeds)
        return detection_metrics(y[keep], s.mean(1)[keep], convention=r.convention)["auroc"]

    signals = [r for r in rows if r.signal in SIGNALS and cost_of(r) <= max_evals]
    if not signals:
        return []
    y = _by_prompt(signals[0], seeds)[1]
    columns = {"overall": np.ones_like(y, dtype=bool)}  # every prompt, then each kind's positives with every negative
    columns.update({name: (y == 0) | np.asarray(mask, dtype=bool) for name, mask in groups.items()
                    if ((y == 1) & np.asarray(mask, dtype=bool)).any()})
    if hard is not None and np.asarray(hard, dtype=bool).any():
        columns["hard negatives"] = (y == 1) | np.asarray(hard, dtype=bool)
    aurocs = {r.signal: {name: per_prompt(r, keep) for name, keep in columns.items()} for r in signals}
    return compare_targets(aurocs, {r.signal: cost_of(r) for r in signals}, max_evals=max_evals, tolerance=tolerance)


def format_every_kind_targets(targets: list[dict], *, tolerance: float = 0.02, floor: dict | None = None) -> str:
    """:func:`every_kind_targets` as a table: per memgeo signal, its AUROC beside the best published one's; then the
    budget floor (:func:`floor_target`), met or by how much it is missed."""
    if not targets:
        lines = ["(no memgeo signal within the evaluation budget, or no published signal, to compare)"]
    else:
        kinds = list(dict.fromkeys(k for t in targets for k in t["kinds"]))
        head = "| memgeo signal | evals | overall (best published) | " + " | ".join(kinds) + " | met |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for t in targets:
            cells = [f"{t['overall']:.3f} ({t['best_published']} {t['best_published_auroc']:.3f})"]
            for k in kinds:
                c = t["kinds"].get(k)
                cells.append("-" if c is None else f"{c['auroc']:.3f} ({c['best_published']} {c['best_published_auroc']:.3f})")
            lines.append(f"| {t['signal']} | {t['evals']} | " + " | ".join(cells) + f" | {'yes' if t['met'] else 'no'} |")
        lines.append(f"\nTargets: per-prompt AUROC at least every published signal's at the same budget overall, and "
                     f"within {tolerance:g} of the best of them on each kind and against the hard negatives.")
    if floor is not None and floor["signal"] is None:
        lines.append(f"At <= {floor['max_evals']} evaluations: no memgeo detector to set against the "
                     f"{floor['floor']:g} target.")
    elif floor is not None:
        gap = "met" if floor["met"] else f"missed by {floor['floor'] - floor['auroc']:.3f}"
        lines.append(f"At <= {floor['max_evals']} evaluations: the best memgeo detector, {floor['signal']} "
                     f"({floor['evals']} evaluations), {floor['auroc']:.3f} overall against the {floor['floor']:g} "
                     f"target: {gap}.")
    return "\n".join(lines)
