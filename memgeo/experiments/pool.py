"""The pooled leaderboard: every signal over several independently trained testbed models, with intervals.

Each model's ``leaderboard.json`` (written by :func:`~memgeo.experiments.leaderboard.run_leaderboards`) holds every
score with its prompt, label, kind, duplication and hard-negative flag. Per signal and column, the pooled AUROC is
the mean over models of the prompt-level AUROC (each prompt scored by the mean over its scoring seeds); its interval
is a percentile bootstrap over models and, within each resampled model, over prompts within each class. Columns:
every memorized prompt against every not memorized one, against the hard negatives only (duplicated prompts that
never replicate their image), and per kind. Beside the signals: the caption-only row each leaderboard carries, and a
"times duplicated" baseline that reads the training data (how many copies of its caption's images were trained on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detect import SIGNALS
from .front import signal_cost
from .leaderboard_tables import compare_targets, floor_target, format_every_kind_targets

__all__ = ["DUPLICATION_BASELINE", "PooledModel", "read_leaderboard", "prompt_auroc", "pooled_auroc",
           "pool_leaderboards", "pooled_targets", "format_pooled", "rank_stability", "check_poolable"]

#: The name of the row that ranks prompts by how often their caption's images were duplicated in training.
DUPLICATION_BASELINE = "times duplicated (training data)"


@dataclass
class PooledModel:
    """One model's per-prompt scores: ``scores[signal]`` ``[prompts]`` (mean over seeds), labels, kinds, hard
    negatives, duplication counts, and the file they came from."""

    name: str
    scores: dict
    labels: np.ndarray
    kinds: list
    hard_negative: np.ndarray
    duplication: np.ndarray
    criterion: str = "verbatim"
    weights: str | None = None
    costs: dict | None = None  # evaluations per sample of each signal, as the cost front counts them (0 if free)


def read_leaderboard(path) -> PooledModel:
    """A model's ``leaderboard.json`` (or the folder holding it) as per-prompt scores, the duplication baseline
    added."""
    path = Path(path)
    file = path / "leaderboard.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no leaderboard.json; run `memgeo bench --out {path}` first")
    lb = json.loads(file.read_text())
    missing = [k for k in ("duplication", "hard_negative", "kinds", "labels", "rows", "seeds") if k not in lb]
    missing += sorted({k for r in lb.get("rows", []) for k in ("n_evals", "n_jvps") if k not in r})  # the costs
    if missing:
        raise ValueError(f"{str(file)!r} lacks {missing}: a leaderboard from an older memgeo; run `memgeo bench` again")
    n, seeds = len(lb["labels"]), int(lb["seeds"])
    scores, costs = {}, {}
    for r in lb["rows"]:
        s = np.asarray(r["scores"], dtype=float)
        if s.size != n * seeds:
            raise ValueError(f"{str(file)!r}: row {r['signal']!r} holds {s.size} scores, not {n} prompts x {seeds} seeds")
        scores[r["signal"]] = s.reshape(n, seeds).mean(1)
        costs[r["signal"]] = signal_cost(r["signal"], r["n_evals"], r["n_jvps"])
    dup = np.asarray(lb["duplication"], dtype=float)
    scores[DUPLICATION_BASELINE] = dup
    return PooledModel(str(file.parent), scores, np.asarray(lb["labels"], dtype=int), list(lb["kinds"]),
                       np.asarray(lb["hard_negative"], dtype=bool), dup, lb.get("criterion", "verbatim"), lb.get("weights"),
                       costs)


def prompt_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of positives against negatives (Mann-Whitney: the share of pairs ordered right, ties counted half);
    NaN where a class is empty."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    d = pos[:, None] - neg[None, :]
    return float((d > 0).mean() + 0.5 * (d == 0).mean())


def _columns(m: PooledModel, kinds) -> dict:
    """Per column, ``(positive mask, negative mask)`` over the model's prompts."""
    pos, neg = m.labels == 1, m.labels == 0
    cols = {"all": (pos, neg), "hard negatives": (pos, neg & m.hard_negative)}
    k = np.asarray(m.kinds)
    cols.update({kind: (pos & (k == kind), neg) for kind in kinds})
    return cols


def _parts(models: list[PooledModel], signal: str, column: str, kinds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per model whose column has both classes, the signal's (positive, negative) scores on it."""
    parts = []
    for m in models:
        p, q = _columns(m, kinds)[column]
        if p.any() and q.any() and signal in m.scores:
            parts.append((m.scores[signal][p], m.scores[signal][q]))
    return parts


def _mean_auroc(parts) -> float:
    """The mean over models of the prompt-level AUROC of their (positive, negative) scores."""
    return float(np.mean([prompt_auroc(a, b) for a, b in parts]))


def pooled_auroc(models: list[PooledModel], signal: str, column: str, *, kinds=("matching", "template", "local"),
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, int]:
    """``(mean AUROC over models, low, high, models counted)`` of ``signal`` on ``column``: models whose column lacks
    a class are left out; the interval resamples models, then prompts within each class of each model."""
    parts = _parts(models, signal, column, kinds)
    if not parts:
        return float("nan"), float("nan"), float("nan"), 0
    value = _mean_auroc(parts)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(int(n_boot)):
        picked = rng.integers(len(parts), size=len(parts))
        reps.append(np.mean([prompt_auroc(rng.choice(parts[i][0], parts[i][0].size),
                                          rng.choice(parts[i][1], parts[i][1].size)) for i in picked]))
    a = (1 - level) / 2
    return value, float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a)), len(parts)


def pool_leaderboards(paths, *, n_boot: int = 1000, kinds=("matching", "template", "local")) -> dict:
    """The pooled table of the models in ``paths``: ``{"models", "columns", "rows": {signal: {column: (value, low,
    high, models)}}, "counts", "rank_stability", "every_kind_targets", "floor_target", "per_model_targets"}``; counts
    per model of memorized prompts per kind, hard negatives and not memorized; the detection targets on the pooled
    AUROCs and on each model's own (:func:`pooled_targets`)."""
    models = [read_leaderboard(p) for p in paths]
    check_poolable(models)
    signals = list(dict.fromkeys(s for m in models for s in m.scores))
    columns = ["all", "hard negatives", *kinds]
    rows = {s: {c: pooled_auroc(models, s, c, kinds=kinds, n_boot=n_boot) for c in columns} for s in signals}
    counts = [{"model": m.name, **{k: int(((m.labels == 1) & (np.asarray(m.kinds) == k)).sum()) for k in kinds},
               "hard negatives": int((m.hard_negative & (m.labels == 0)).sum()), "not memorized": int((m.labels == 0).sum())}
              for m in models]
    targets, floor = pooled_targets(models, kinds=kinds)
    per_model = {m.name: dict(zip(("every_kind_targets", "floor_target"), pooled_targets([m], kinds=kinds)))
                 for m in models}
    return {"models": [m.name for m in models], "columns": columns, "rows": rows, "counts": counts,
            "rank_stability": rank_stability(models), "every_kind_targets": targets, "floor_target": floor,
            "per_model_targets": per_model}


def pooled_targets(models: list[PooledModel], *, kinds=("matching", "template", "local")) -> tuple[list, dict | None]:
    """The detection targets on the pooled AUROCs of ``models`` (per column the mean over models of the prompt-level
    AUROC, as :func:`pooled_auroc` reads it): the every-kind comparison at a small budget and the budget floor, by the
    rules a single leaderboard uses (:func:`~memgeo.experiments.leaderboard_tables.compare_targets`,
    :func:`~memgeo.experiments.leaderboard_tables.floor_target`). Only registry signals every model scored take part;
    ``([], None)`` where no model has a memorized prompt."""
    costs = _costs(models)
    named = [s for s in models[0].scores if s in SIGNALS and s in costs and all(s in m.scores for m in models)]

    def value(signal, column):
        parts = _parts(models, signal, column, kinds)
        return (_mean_auroc(parts) if parts else float("nan")), len(parts)

    columns = ["all", *kinds, "hard negatives"]
    values = {s: {c: value(s, c) for c in columns} for s in named}
    if not named or values[named[0]]["all"][1] == 0:
        return [], None
    kept = [c for c in columns if all(values[s][c][1] > 0 for s in named)]  # a column no model can score goes
    aurocs = {s: {("overall" if c == "all" else c): values[s][c][0] for c in kept} for s in named}
    points = [{"signal": s, "evals": costs[s], "auroc": values[s]["all"][0], "own": SIGNALS[s].own} for s in named]
    return compare_targets(aurocs, costs), floor_target(points)


def _costs(models: list[PooledModel]) -> dict:
    """Each signal's cost, the same in every model's leaderboard (a clear error names both files otherwise)."""
    costs, where = {}, {}
    for m in models:
        for signal, cost in (m.costs or {}).items():
            if costs.setdefault(signal, cost) != cost:
                raise ValueError(f"{signal!r} costs {costs[signal]} evaluations per sample in {where[signal]} and "
                                 f"{cost} in {m.name}: pool leaderboards run with the same settings")
            where.setdefault(signal, m.name)
    return costs


def check_poolable(models: list[PooledModel]) -> None:
    """Refuse leaderboards that cannot be pooled: labels by different criteria, one model (the same weights or the
    same folder) counted twice, or a signal whose cost differs between them (other settings)."""
    if len({m.criterion for m in models}) > 1:
        raise ValueError(f"the leaderboards label by different criteria ({sorted({m.criterion for m in models})}); "
                         "pool leaderboards of one criterion")
    for key, what in ((lambda m: m.name, "folder"), (lambda m: m.weights, "model weights")):
        seen = [key(m) for m in models if key(m) is not None]
        if len(seen) != len(set(seen)):
            raise ValueError(f"the same {what} appears twice among the pooled leaderboards: each model counts once")
    _costs(models)


def rank_stability(models: list[PooledModel], *, exclude=(DUPLICATION_BASELINE,)) -> dict:
    """Kendall's tau between every two models' orderings of the signals by prompt-level AUROC ("all" column), and
    their mean: how much a signal's rank depends on which model it was measured on."""
    from scipy.stats import kendalltau

    signals = [s for s in models[0].scores if s not in exclude and all(s in m.scores for m in models)]
    per = {m.name: [prompt_auroc(m.scores[s][m.labels == 1], m.scores[s][m.labels == 0]) for s in signals]
           for m in models}
    names = list(per)
    pairs = {f"{a} / {b}": float(kendalltau(per[a], per[b]).statistic) for i, a in enumerate(names) for b in names[i + 1:]}
    return {"signals": signals, "auroc": per, "pairs": pairs,
            "mean_tau": float(np.mean(list(pairs.values()))) if pairs else float("nan")}


def format_pooled(table: dict) -> str:
    """The pooled leaderboard as markdown: every cell the mean prompt-level AUROC over models with its interval."""
    cols = table["columns"]
    lines = [f"Pooled over {len(table['models'])} models ({', '.join(table['models'])}): prompt-level AUROC, mean over "
             "models, 95% bootstrap interval over models and prompts.", "",
             "| signal | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for signal, cells in table["rows"].items():
        out = []
        for c in cols:
            v, lo, hi, n = cells[c]
            out.append("-" if n == 0 else f"{v:.3f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"| {signal} | " + " | ".join(out) + " |")
    lines += ["", "| model | " + " | ".join(k for k in table["counts"][0] if k != "model") + " |",
              "|" + "---|" * len(table["counts"][0])]
    lines += ["| " + " | ".join(str(v) for v in c.values()) + " |" for c in table["counts"]]
    if "every_kind_targets" in table:
        lines += ["", "Detection targets on the pooled AUROCs:", "",
                  format_every_kind_targets(table["every_kind_targets"], floor=table["floor_target"])]
        for name, t in table.get("per_model_targets", {}).items():
            lines += ["", f"On {name} alone:", "", format_every_kind_targets(t["every_kind_targets"],
                                                                                floor=t["floor_target"])]
    rs = table["rank_stability"]
    lines += ["", f"Rank stability of the signals across models (Kendall's tau, 'all' column): mean {rs['mean_tau']:.2f}"
              + "".join(f"; {k} {v:.2f}" for k, v in rs["pairs"].items())]
    return "\n".join(lines)
