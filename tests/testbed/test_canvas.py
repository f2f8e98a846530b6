"""Canvas testbed data: one caption grammar for all prompts, graded duplication, three kinds of memorization."""

import numpy as np
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


def test_the_small_data_regime_places_the_digits_as_they_are():
    from memgeo.testbed.canvas import canvas_cells

    data = build_canvas_data(n_single=30, n_per_kind=3, n_ordinary=4, n_heldout=2, seed=5)
    assert data.bank is data.digits and data.cell_ids is data.layout and "augment" not in data.settings
    torch.testing.assert_close(canvas_cells(data.canvases), data.digits[data.layout], rtol=0, atol=0)


@pytest.fixture(scope="module")
def augmented():
    return build_canvas_data(n_single=400, n_per_kind=6, n_ordinary=10, n_heldout=4, ladder=(2, 4, 8), augment=True, seed=1)


def test_augmented_images_repeat_only_where_duplicated(augmented):
    from memgeo.testbed.canvas import canvas_cells

    data = augmented
    assert len(torch.unique(data.canvases.reshape(len(data.canvases), -1), dim=0)) == len(data.canvases)
    cells = canvas_cells(data.canvases).reshape(-1, 64)
    ids = data.cell_ids.reshape(-1)
    torch.testing.assert_close(cells, data.bank[ids].reshape(-1, 64), rtol=0, atol=0)
    shared = {}  # cell instances used by more than one canvas: exactly the kept cells of local prompts
    for canvas, row in enumerate(data.cell_ids.tolist()):
        for i in row:
            shared.setdefault(i, set()).add(canvas)
    repeated = {i for i, c in shared.items() if len(c) > 1}
    local = [p for p in data.prompts if p.get("memorization") == "local" and p["duplication"] > 1]
    kept = {data.cell_ids[p["targets"][0]][int(np.argmax(np.asarray(p["mask"]).reshape(2, 8, 2, 8).sum((1, 3)).ravel()))].item()
            for p in local}
    assert repeated == kept
    assert len(torch.unique(data.bank.reshape(len(data.bank), -1), dim=0)) == len(data.bank)  # no two instances alike


def test_cell_warps_are_the_stated_affine_maps():
    from memgeo.testbed.canvas import affine_parameters, warp_cells

    data = build_canvas_data(n_single=10, n_per_kind=1, n_ordinary=2, n_heldout=1)
    cells = data.digits[:40]
    zero = torch.zeros(40, dtype=torch.float64)
    same = warp_cells(cells, zero, zero + 1, torch.zeros(40, 2, dtype=torch.float64))
    torch.testing.assert_close(same, cells, rtol=0, atol=1e-6)  # the identity map samples every pixel centre
    one_px = torch.tensor([[1 / 8, -1 / 8]], dtype=torch.float64).expand(40, 2)  # one pixel right and one up
    moved = warp_cells(cells, zero, zero + 1, one_px)
    want = torch.full_like(cells, -1.0)
    want[:, :-1, 1:] = cells[:, 1:, :-1]
    torch.testing.assert_close(moved, want, rtol=0, atol=1e-6)
    quarter = warp_cells(cells, zero + torch.pi / 2, zero + 1, torch.zeros(40, 2, dtype=torch.float64))
    torch.testing.assert_close(quarter, torch.rot90(cells, 1, dims=(1, 2)), rtol=0, atol=1e-5)
    angle, scale, shift = affine_parameters(10000, 0)
    assert float(angle.abs().max()) <= np.radians(10) and 0.9 <= float(scale.min()) and float(scale.max()) <= 1.1
    assert float(shift.abs().max()) <= 0.2 and float(shift.abs().max()) > 0.19


def test_the_capped_sd_regime_keeps_duplicates_under_two_percent_of_items():
    from memgeo.testbed import REGIMES

    data = build_canvas_data(seed=0, **REGIMES["sd-capped"]["data"])
    duplicated = sum(p["duplication"] for p in data.prompts if p["kind"] == "memorized")
    assert len(data.canvases) >= 50000 and duplicated / len(data.items) <= 0.02
    views = REGIMES["sd-capped"]["steps"] * 64 / len(data.items)  # expected views of a single image over training
    assert views <= 21


@pytest.mark.parametrize("regime", ["sd", "sd-ladder", "sd-ladder-local", "sd-ladder-graded", "sd-ladder-shared"])
def test_the_sd_regime_meets_its_data_budget(regime):
    from memgeo.testbed import REGIMES
    from memgeo.testbed.train import (SD_GRADED_LADDER_SHARES, SD_LADDER_SHARES, SD_LOCAL_LADDER_SHARES, SD_SHARED_LADDER_SHARES,
                                      SD_SHARES)

    spec = REGIMES[regime]
    data = build_canvas_data(seed=0, **spec["data"])
    distinct = torch.unique(data.canvases.reshape(len(data.canvases), -1), dim=0)
    assert len(distinct) == len(data.canvases) >= 50000  # pixel-unique canvases
    mem = [p for p in data.prompts if p["kind"] == "memorized"]
    n = len(data.items)
    assert sum(p["duplication"] for p in mem) / n <= 0.05
    assert spec["steps"] * 64 / n <= 30  # expected views of a single image over training
    ladders = {"sd": SD_SHARES, "sd-ladder": SD_LADDER_SHARES, "sd-ladder-local": SD_LOCAL_LADDER_SHARES,
               "sd-ladder-graded": SD_GRADED_LADDER_SHARES, "sd-ladder-shared": SD_SHARED_LADDER_SHARES}
    for kind, shares in ladders[regime].items():
        per_image = sorted(p["duplication"] / len(p["targets"] if kind == "template" else [0]) / n
                           for p in mem if p["memorization"] == kind)
        for got, want in zip(per_image, sorted(shares), strict=True):  # each image at the share the ladder asks: the
            assert want * (1 - 1e-9) <= got <= want + 1 / n  # smallest count that reaches it, so within one copy
        assert max(per_image) >= 0.003
    counts = {}
    for i, _ in data.items:
        counts[i] = counts.get(i, 0) + 1
    for p in mem:  # a template prompt's copies are spread evenly over its canvases
        assert sum(counts[i] for i in p["targets"]) == p["duplication"]


def test_a_ladder_per_kind_gives_each_kind_its_counts():
    ladder = {"matching": (5, 3), "template": (8,), "local": (4, 2, 2)}
    data = build_canvas_data(n_single=50, n_ordinary=3, n_heldout=2, ladder=ladder, n_variants=2, seed=1)
    for kind, counts in ladder.items():
        assert sorted(p["duplication"] for p in data.prompts if p.get("memorization") == kind) == sorted(counts)
    assert data.settings["ladder"] == {k: list(v) for k, v in ladder.items()}
    assert build_canvas_data(**data.settings).items == data.items  # the recorded settings rebuild the data
    with pytest.raises(ValueError, match="ladder"):
        build_canvas_data(n_single=50, ladder={"matching": (2,)})


def test_companions_share_a_duplicated_caption_as_singles():
    ladder = {"matching": (6, 5, 4), "template": (8, 4), "local": (3, 2)}
    companions = {"matching": (0, 2, 7), "template": (3, 0), "local": (4, 1)}
    data = build_canvas_data(n_single=40, n_ordinary=5, n_heldout=3, ladder=ladder, n_variants=2, seed=2,
                             companions=companions)
    plain = build_canvas_data(n_single=40, n_ordinary=5, n_heldout=3, ladder=ladder, n_variants=2, seed=2)
    per_item = {}
    for i, c in data.items:
        per_item.setdefault(c, []).append(i)
    mem = [p for p in data.prompts if p["kind"] == "memorized"]
    for kind in ladder:  # each rung keeps its own number of companions, whatever the shuffle
        pairs = sorted((p["duplication"], p["companions"]) for p in mem if p["memorization"] == kind)
        assert pairs == sorted(zip(ladder[kind], companions[kind]))
    for p in mem:
        others = [i for i in per_item[p["text"]] if i not in p["targets"]]
        assert len(others) == len(set(others)) == p["companions"]  # distinct canvases, each once
        assert len(per_item[p["text"]]) == p["duplication"] + p["companions"]
        if p["memorization"] == "local":  # the kept cell is what the duplicates share, the companions lack it
            pos = int(np.argmax(np.asarray(p["mask"]).reshape(2, 8, 2, 8)[:, 0, :, 0]))
            assert all(int(data.layout[i, pos]) != int(data.layout[p["targets"][0], pos]) for i in others)
            assert all(int(data.cell_ids[i, pos]) != int(data.cell_ids[p["targets"][0], pos]) for i in others)
    assert {p["text"] for p in data.prompts if p["kind"] == "ordinary"}.isdisjoint(p["text"] for p in mem)
    assert len(data.canvases) == len(plain.canvases) + sum(sum(v) for v in companions.values())
    assert data.settings["companions"] == {k: list(v) for k, v in companions.items()}
    assert build_canvas_data(**data.settings).items == data.items  # the recorded settings rebuild the data
    assert "companions" not in plain.settings
    with pytest.raises(ValueError, match=r"companions\['local'\]"):
        build_canvas_data(n_single=40, ladder=ladder, companions={**companions, "local": (1,)})
    with pytest.raises(ValueError, match="per-kind ladder"):
        build_canvas_data(n_single=40, companions=companions)


def test_the_canvas_data_of_a_seed_never_drifts():
    """The small-data regime's draw (captions, layouts, items, prompts, pixels) is pinned by its hash: a refactor of
    the builder that changes one draw changes every trained model's data and is refused here."""
    import hashlib
    import json

    d = build_canvas_data(seed=0)
    h = hashlib.sha256()
    for t in (d.canvases, d.layout):
        h.update(t.numpy().tobytes())
    h.update(json.dumps([d.items, d.prompts, d.settings], sort_keys=True, default=str).encode())
    assert h.hexdigest() == "9a72fa6a506a617bcfd45d2f5551d0b39b25c5c150bd86c7512f1e91d41e8b2b"
