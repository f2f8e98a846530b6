"""Canvas testbed data: one caption grammar for all prompts, graded duplication, three kinds of memorization."""

import pytest
import torch

from memgeo.detect import caption_baseline
from memgeo.testbed import KINDS, build_canvas_data, to_images, to_latents
from memgeo.testbed.canvas import DUPLICATION_LADDER


@pytest.fixture(scope="module")
def data():
    return build_canvas_data(n_single=600, n_per_kind=12, n_ordinary=30, n_heldout=12, seed=0)


def test_the_captions_alone_do_not_tell_memorized_prompts_apart(data):
    mem = [p["text"] for p in data.prompts if p["kind"] == "memorized"]
    other = [p["text"] for p in data.prompts if p["kind"] != "memorized"]
    res = caption_baseline(mem + other, [1] * len(mem) + [0] * len(other))
    assert res["auroc"] <= 0.65  # chance is 0.5; at 36 + 42 prompts its standard error is about 0.065


def test_graded_duplication_and_every_kind(data):
    mem = [p for p in data.prompts if p["kind"] == "memorized"]
    assert {p["memorization"] for p in mem} == set(KINDS)
    assert all(sum(p["memorization"] == k for p in mem) == 12 for k in KINDS)
    assert {p["duplication"] for p in mem} == set(DUPLICATION_LADDER)
    for p in mem:  # the caption is in training exactly as often as its duplication count
        assert sum(text == p["text"] for _, text in data.items) == p["duplication"]


def test_each_kind_duplicates_what_it_says(data):
    top = lambda c: data.labels[data.layout[c]]  # noqa: E731  the digit classes of a canvas, in position order
    for p in (q for q in data.prompts if q["kind"] == "memorized"):
        copies = [i for i, text in data.items if text == p["text"]]
        if p["memorization"] == "matching":
            assert set(copies) == set(p["targets"]) and len(p["targets"]) == 1
        elif p["memorization"] == "template":
            assert set(copies) == set(p["targets"]) and len(set(copies)) == min(4, p["duplication"])
        else:
            mask = torch.tensor(p["mask"], dtype=torch.bool)
            assert int(mask.sum()) == 64
            region = torch.stack([data.canvases[i][mask] for i in copies])
            assert bool((region == region[0]).all())  # the duplicated region is the same image in every copy
            if p["duplication"] >= 4:
                rest = torch.stack([data.canvases[i][~mask] for i in copies])
                assert not bool((rest == rest[0]).all())  # the rest varies
        assert all(torch.equal(top(i), top(copies[0])) for i in copies)  # every copy fits the one caption


def test_ordinary_prompts_are_seen_once_and_heldout_never(data):
    texts = [t for _, t in data.items]
    for p in data.prompts:
        if p["kind"] == "ordinary":
            assert texts.count(p["text"]) == 1
        if p["kind"] == "heldout":
            assert p["text"] not in texts


def test_latents_fold_the_canvas_and_the_data_is_seeded(data):
    x = to_latents(data.canvases[:5])
    assert x.shape == (5, 4, 8, 8) and torch.equal(to_images(x), data.canvases[:5])
    again = build_canvas_data(n_single=600, n_per_kind=12, n_ordinary=30, n_heldout=12, seed=0)
    assert [p["text"] for p in again.prompts] == [p["text"] for p in data.prompts]
    assert torch.equal(again.canvases, data.canvases)
