"""The caption-only baseline: it sees style when the classes differ in style, and nothing when they do not."""

import random

import numpy as np
import pytest

from memgeo.detect import caption_baseline, uppercase_fraction

WORDS = ["harbor", "lantern", "meadow", "digit", "seven", "thin", "bright", "river", "stone", "window", "garden"]


def captions(n, rng, upper=False):
    out = []
    for _ in range(n):
        t = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        out.append(t.title() if upper else t)
    return out


def test_a_style_difference_is_found():
    rng = random.Random(0)
    texts = captions(60, rng, upper=True) + captions(60, rng)
    y = [1] * 60 + [0] * 60
    assert caption_baseline(texts, y)["auroc"] > 0.95
    assert uppercase_fraction(["ABc", "abc", "123"]).tolist() == pytest.approx([2 / 3, 0.0, 0.0])


def test_one_caption_distribution_gives_chance():
    rng = random.Random(1)
    texts = captions(200, rng)
    y = np.random.default_rng(1).permutation([1] * 100 + [0] * 100)
    res = caption_baseline(texts, y)
    assert abs(res["auroc"] - 0.5) < 0.12  # 4 standard errors of a chance AUROC at 100 + 100
    assert res["scores"].shape == (200,) and res["folds"] == 5


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="both classes"):
        caption_baseline(["a", "b", "c"], [1, 1, 1])
    with pytest.raises(ValueError, match="at least 2 prompts of each class"):
        caption_baseline(["a", "b", "c"], [1, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        caption_baseline(["a", "b"], [1, 0, 0])
