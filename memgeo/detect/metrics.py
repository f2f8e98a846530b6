"""Detection metrics: AUROC and TPR at a target FPR, under both published conventions.

* ``"strict"``: the largest TPR among ROC points whose FPR is at most the target (default);
* ``"nearest"``: the TPR of the ROC point whose FPR is nearest the target.

Scores are oriented so that larger means "more likely memorized"; labels are 1 for memorized.
"""

from __future__ import annotations

import numpy as np

__all__ = ["auroc", "tpr_at_fpr", "roc_curve", "detection_metrics", "bootstrap_metrics", "CONVENTIONS"]

CONVENTIONS = ("strict", "nearest")


def _arrays(labels, scores):
    y = np.asarray(labels).astype(int).reshape(-1)
    s = np.asarray(scores, dtype=float).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length, got {y.size} and {s.size}")
    if y.size == 0:
        raise ValueError("labels and scores are empty; they need at least one memorized and one ordinary sample")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 (ordinary) or 1 (memorized)")
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("labels must contain both classes (0 and 1) to compute ROC metrics")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def roc_curve(labels, scores):
    """``(fpr, tpr, thresholds)`` from scikit-learn (all thresholds kept)."""
    from sklearn.metrics import roc_curve as _roc

    y, s = _arrays(labels, scores)
    return _roc(y, s, drop_intermediate=False)


def auroc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    y, s = _arrays(labels, scores)
    return float(roc_auc_score(y, s))


def tpr_at_fpr(labels, scores, fpr: float, *, convention: str = "strict") -> float:
    """TPR at a target FPR under ``convention`` (``"strict"`` or ``"nearest"``)."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    f, t, _ = roc_curve(labels, scores)
    if convention == "strict":
        return float(t[f <= fpr + 1e-12].max())
    return float(t[np.argmin(np.abs(f - fpr))])


def detection_metrics(labels, scores, *, convention: str = "strict") -> dict:
    """AUROC, TPR@1%FPR and TPR@3%FPR, with the convention named."""
    return {
        "auroc": auroc(labels, scores),
        "tpr@1%fpr": tpr_at_fpr(labels, scores, 0.01, convention=convention),
        "tpr@3%fpr": tpr_at_fpr(labels, scores, 0.03, convention=convention),
        "convention": convention,
    }


def bootstrap_metrics(labels, scores, *, groups=None, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                      convention: str = "strict") -> dict:
    """Percentile bootstrap intervals of AUROC, TPR@1%FPR and TPR@3%FPR.

    Resamples whole groups (``groups``: one id per score, e.g. the prompt of each generation, so a
    prompt's seeds move together; each score is its own group by default), with replacement and
    within each class, so that every replicate has both classes. Returns ``{metric: (low, high)}``
    at ``level`` and the point estimates under ``"value"``.
    """
    y, s = _arrays(labels, scores)
    g = np.arange(y.size) if groups is None else np.asarray(groups).reshape(-1)
    if g.size != y.size:
        raise ValueError(f"groups must hold one id per score ({y.size}), got {g.size}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    ids = {c: np.unique(g[y == c]) for c in (0, 1)}
    members = {k: np.flatnonzero(g == k) for k in np.unique(g)}
    rng = np.random.default_rng(seed)
    reps = {"auroc": [], "tpr@1%fpr": [], "tpr@3%fpr": []}
    for _ in range(int(n_boot)):
        pick = np.concatenate([members[k] for c in (0, 1) for k in rng.choice(ids[c], size=ids[c].size)])
        m = detection_metrics(y[pick], s[pick], convention=convention)
        for key in reps:
            reps[key].append(m[key])
    a = (1 - level) / 2
    out = {key: (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) for key, v in reps.items()}
    out["value"] = detection_metrics(y, s, convention=convention)
    return out
