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


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_population_auroc_at_their_level():
    """Over replicate data sets, the 90% interval covers the true AUROC about 90% of the time."""
    from scipy.stats import norm

    from memgeo.detect import bootstrap_metrics

    shift = 1.0
    truth = norm.cdf(shift / np.sqrt(2))  # AUROC of N(shift, 1) against N(0, 1)
    rng = np.random.default_rng(0)
    hits, n_rep = 0, 100
    for _ in range(n_rep):
        s = np.concatenate([rng.normal(shift, 1, 40), rng.normal(0, 1, 40)])
        y = np.array([1] * 40 + [0] * 40)
        lo, hi = bootstrap_metrics(y, s, n_boot=300, level=0.9, seed=int(rng.integers(1 << 30)))["auroc"]
        hits += lo <= truth <= hi
    # binomial(100, 0.9) has sd 3: the percentile bootstrap under-covers a little at n = 40 + 40
    assert 75 <= hits <= 98


def test_bootstrap_resamples_whole_groups():
    from memgeo.detect import bootstrap_metrics

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # two prompts per class, two seeds each
    out = bootstrap_metrics(y, s, groups=groups, n_boot=200)
    # replicates pick prompts whole: AUROC is one of the values the 2 x 2 prompt choices allow
    assert out["value"]["auroc"] == pytest.approx(0.5)
    assert 0 <= out["auroc"][0] <= out["value"]["auroc"] <= out["auroc"][1] <= 1
    with pytest.raises(ValueError, match="groups must hold one id per score"):
        bootstrap_metrics(y, s, groups=groups[:3])


def test_rate_correlation_is_spearman_of_the_per_prompt_mean():
    from scipy.stats import spearmanr

    from memgeo.experiments import LeaderboardRow, rate_correlation

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(12, 3))  # 12 prompts x 3 seeds, flattened prompt-major as the leaderboard stores them
    rates = rng.uniform(size=12)
    row = LeaderboardRow("s", 0.5, 0.0, 0.0, 2, 0, 0.0, "strict", scores.ravel(), np.zeros(36))
    assert rate_correlation(row, rates, seeds=3) == pytest.approx(spearmanr(scores.mean(1), rates).statistic)
    with pytest.raises(ValueError, match="one rate per prompt"):
        rate_correlation(row, rates[:5], seeds=3)
