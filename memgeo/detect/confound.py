"""The caption confound: how well the prompt text alone separates memorized from ordinary prompts.

A detector must beat what the captions give away without looking at any model. When memorized
and ordinary prompt sets come from different sources (LAION captions against COCO, Lexica and
generated prompts), a text classifier separates them almost perfectly. On such a set a
detector's AUROC cannot be told apart from caption style. Every leaderboard and every labelled
scan reports this baseline beside the signals.

The baseline: character 2-4-gram TF-IDF (within word boundaries, case kept) and logistic regression, scored
out of fold by stratified k-fold cross-validation (scikit-learn); its AUROC is per prompt.
"""

from __future__ import annotations

import numpy as np

__all__ = ["caption_baseline", "uppercase_fraction"]


def caption_baseline(texts, labels, *, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated caption-only classifier: ``{"auroc", "scores", "folds"}``.

    ``scores`` are out-of-fold probabilities of "memorized", one per prompt (never from a model
    fit on that prompt). ``folds`` drops to the size of the smaller class when that is smaller.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts = [str(t) for t in texts]
    y = np.asarray(labels, dtype=int).reshape(-1)
    if len(texts) != y.size:
        raise ValueError(f"texts and labels must have the same length, got {len(texts)} and {y.size}")
    if not set(np.unique(y)) <= {0, 1} or y.min(initial=1) == y.max(initial=0):
        raise ValueError("labels must hold both classes, 0 (ordinary) and 1 (memorized)")
    k = min(int(folds), int(np.bincount(y).min()))
    if k < 2:
        raise ValueError("the caption baseline needs at least 2 prompts of each class (for 2-fold cross-validation)")
    clf = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=False, sublinear_tf=True),
                        LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_predict(clf, texts, y, cv=cv, method="predict_proba")[:, 1]
    return {"auroc": float(roc_auc_score(y, scores)), "scores": scores, "folds": k}


def uppercase_fraction(texts) -> np.ndarray:
    """The fraction of letters that are upper case, per text: a one-number stylistic cue."""
    out = []
    for t in texts:
        letters = [c for c in str(t) if c.isalpha()]
        out.append(sum(c.isupper() for c in letters) / len(letters) if letters else 0.0)
    return np.asarray(out)
