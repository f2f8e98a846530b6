"""The cost-accuracy front of a leaderboard: per signal its prompt-level AUROC (with interval) against the UNet
evaluations it spends per sample, and the signals no other beats at equal or lower cost."""

from __future__ import annotations

from ..detect import SIGNALS
from .rows import regroup

__all__ = ["is_free", "signal_cost", "cost_of", "cost_front", "format_cost_front"]


def _free(signal: str) -> bool:
    spec = SIGNALS.get(signal)
    return spec is not None and spec.free


def is_free(row) -> bool:
    """Whether a leaderboard row's signal reads a generation run anyway (:attr:`~memgeo.detect.SignalSpec.free`)."""
    return _free(row.signal)


def signal_cost(signal: str, n_evals: int, n_jvps: int) -> int:
    """Evaluations per sample ``signal`` spends beyond a generation the user runs anyway: 0 for a free signal, else
    its ``n_evals`` with each of its ``n_jvps`` JVPs counted as one."""
    return 0 if _free(signal) else int(n_evals + n_jvps)


def cost_of(row) -> int:
    """:func:`signal_cost` of a leaderboard row."""
    return signal_cost(row.signal, row.n_evals, row.n_jvps)


def cost_front(rows, *, seeds: int) -> list[dict]:
    """Per signal ``{"signal", "evals", "auroc", "low", "high", "own", "front"}``, sorted by cost: ``auroc`` is
    per prompt (the mean score over ``seeds``) with its 95% bootstrap interval; ``front`` marks the Pareto front
    (no signal with at most its cost has a higher AUROC); ``own`` marks memgeo's own detectors. The caption-only
    baseline, which reads no model, is left out."""
    points = []
    for r in rows:
        if r.signal not in SIGNALS:
            continue
        p = regroup(r, seeds=seeds, per_prompt=True)
        lo, hi = p.intervals["auroc"]
        points.append({"signal": r.signal, "evals": cost_of(r), "auroc": float(p.auroc), "low": lo, "high": hi,
                       "own": SIGNALS[r.signal].own})
    points.sort(key=lambda q: (q["evals"], -q["auroc"]))
    for q in points:  # dominated: another at most as costly and at least as accurate, strictly better in one
        q["front"] = not any(o["evals"] <= q["evals"] and o["auroc"] >= q["auroc"]
                             and (o["evals"] < q["evals"] or o["auroc"] > q["auroc"]) for o in points)
    return points


def format_cost_front(points: list[dict]) -> str:
    """The front as a markdown table (memgeo's detectors starred)."""
    lines = ["| signal | evaluations per sample | AUROC per prompt [95%] | on the front |", "|---|---|---|---|"]
    for q in points:
        lines.append(f"| {q['signal']}{' *' if q['own'] else ''} | {q['evals']} | {q['auroc']:.3f} "
                     f"[{q['low']:.2f}, {q['high']:.2f}] | {'yes' if q['front'] else ''} |")
    lines.append("\n`*` memgeo's own detector. Evaluations: UNet calls per sample beyond a generation the user runs "
                 "anyway (a JVP counted as one; a free signal 0).")
    return "\n".join(lines)
