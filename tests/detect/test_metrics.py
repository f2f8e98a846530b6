"""AUROC and TPR@FPR against hand computations."""

import numpy as np
import pytest

from memgeo.detect import auroc, detection_metrics, tpr_at_fpr


def test_auroc_is_the_mann_whitney_probability():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 60)
    scores = np.concatenate([pos, neg])
    labels = np.r_[np.ones(40), np.zeros(60)]
    mw = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(auroc(labels, scores) - mw) < 1e-12


def test_tpr_conventions_on_a_hand_built_roc():
    # 100 negatives with scores 0..99 and 10 positives: FPR steps of 0.01
    neg = np.arange(100.0)
    pos = np.array([99.5, 98.5, 97.5, 96.2, 95.5, 50, 40, 30, 20, 10])
    labels = np.r_[np.ones(10), np.zeros(100)]
    scores = np.r_[pos, neg]
    # threshold above 99: TPR 0.1 at FPR 0; >= 98: 0.2 at 0.01; >= 97: 0.3 at 0.02; >= 96: 0.4 at 0.03; >= 95: 0.5 at 0.04
    assert tpr_at_fpr(labels, scores, 0.01, convention="strict") == pytest.approx(0.2)
    assert tpr_at_fpr(labels, scores, 0.03, convention="strict") == pytest.approx(0.4)
    assert tpr_at_fpr(labels, scores, 0.025, convention="strict") == pytest.approx(0.3)
    assert tpr_at_fpr(labels, scores, 0.025, convention="nearest") in (pytest.approx(0.3), pytest.approx(0.4))
    m = detection_metrics(labels, scores)
    assert m["convention"] == "strict" and m["tpr@1%fpr"] == pytest.approx(0.2)


def test_perfect_and_inverted_detectors():
    labels = [1, 1, 0, 0]
    assert auroc(labels, [3, 4, 1, 2]) == 1.0 and auroc(labels, [1, 2, 3, 4]) == 0.0
    assert tpr_at_fpr(labels, [3, 4, 1, 2], 0.0) == 1.0


@pytest.mark.parametrize(
    "labels, scores, match",
    [([1, 1], [0.1, 0.2], "both classes"), ([1, 0], [0.1], "same length"), ([1, 2], [0, 1], "0 .ordinary. or 1"),
     ([1, 0], [np.nan, 1], "finite")],
)
def test_bad_metric_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        auroc(labels, scores)
    with pytest.raises(ValueError, match="convention"):
        tpr_at_fpr([1, 0], [1, 0], 0.01, convention="closest")
