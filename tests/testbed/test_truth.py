"""The field's copy criterion (nearest / second-nearest distance ratio, Gu et al.) against brute-force loops."""

import math

import pytest
import torch

from memgeo.testbed import build_canvas_data
from memgeo.testbed.canvas import canvas_cells
from memgeo.testbed.truth import (
    COPY_RATIO,
    REPLICATION_RATIO,
    distinct_rows,
    mask_position,
    nearest_ratios,
)


@pytest.fixture(scope="module")
def augmented():
    return build_canvas_data(n_single=80, n_per_kind=3, n_ordinary=4, n_heldout=2, ladder=(3, 5), augment=True, seed=2)


@pytest.fixture(scope="module")
def small():
    return build_canvas_data(n_single=80, n_per_kind=3, n_ordinary=4, n_heldout=2, ladder=(3, 5), seed=2)


def brute_force_ratio(query: torch.Tensor, images: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Nearest / second-nearest L2 distance of ``query`` among the distinct ``images``, and the nearest image."""
    distinct = []
    for im in images:
        if not any(torch.equal(im, d) for d in distinct):
            distinct.append(im)
    dists = sorted((float((query.double() - d.double()).norm()), k) for k, d in enumerate(distinct))
    return dists[0][0] / dists[1][0], distinct[dists[0][1]]


def test_the_ratio_is_the_brute_force_one_on_distinct_canvases(augmented):
    g = torch.Generator().manual_seed(0)
    matching = next(p for p in augmented.prompts if p.get("memorization") == "matching")
    target = augmented.images[matching["targets"][0]]
    queries = torch.stack([target + 0.05 * k * torch.randn(16, 16, generator=g) for k in range(6)]).clamp(-1, 1)
    c = nearest_ratios(augmented, matching, queries, level="canvas")
    for q, ratio, is_target in zip(queries, c["ratio"], c["nearest_is_target"]):
        want, nearest = brute_force_ratio(q, augmented.images)
        assert float(ratio) == pytest.approx(want, rel=1e-9)
        assert bool(is_target) == torch.equal(nearest, target)
    assert float(c["ratio"][0]) == 0.0 and bool(c["target_copy"][0])  # the target itself, duplicated in training
    assert torch.equal(c["copy"], c["ratio"] < COPY_RATIO)


def test_duplicates_are_not_their_own_second_neighbour(augmented):
    matching = next(p for p in augmented.prompts if p.get("memorization") == "matching")
    copies = sum(1 for i, _ in augmented.items if i == matching["targets"][0])
    assert copies >= 3
    unique, inverse = distinct_rows(augmented.images)
    assert len(unique) == len(augmented.images) and torch.equal(unique[inverse], augmented.images.reshape(len(inverse), -1).double())
    doubled = torch.cat([augmented.images, augmented.images[:5]])  # the same images twice
    unique2, inverse2 = distinct_rows(doubled)
    assert len(unique2) == len(unique) and torch.equal(inverse2[-5:], inverse2[:5])


def test_a_blend_of_two_training_images_is_not_a_copy(augmented):
    a, b = augmented.images[0], augmented.images[1]
    blend = ((a + b) / 2)[None]
    c = nearest_ratios(augmented, {"targets": [0]}, blend, level="canvas")
    assert float(c["ratio"][0]) > 0.9 and not bool(c["copy"][0])  # about as near its two sources: ratio near 1
    mean = augmented.images[:30].mean(0, keepdim=True)  # the mean of thirty training images
    assert not bool(nearest_ratios(augmented, {}, mean, level="canvas")["copy"][0])


def test_a_local_prompt_is_judged_by_its_cell_among_the_cells_at_that_position(augmented):
    local = next(p for p in augmented.prompts if p.get("memorization") == "local")
    pos = mask_position(local["mask"])
    target = augmented.images[local["targets"][0]].clone()
    other = augmented.images[[i for i in range(len(augmented.images)) if i not in local["targets"]][0]]
    mixed = canvas_cells(other[None]).clone()
    mixed[0, pos] = canvas_cells(target[None])[0, pos]  # another canvas around the duplicated cell
    mixed = mixed.reshape(1, 2, 2, 8, 8).permute(0, 1, 3, 2, 4).reshape(1, 16, 16)
    c = nearest_ratios(augmented, local, mixed, level="canvas")
    assert bool(c["target_copy"][0]) and float(c["ratio"][0]) == 0.0
    noisy = canvas_cells(mixed)[0, pos] + 0.1 * torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    cell = noisy.clamp(-1, 1)
    mixed2 = canvas_cells(mixed).clone()
    mixed2[0, pos] = noisy
    mixed2 = mixed2.reshape(1, 2, 2, 8, 8).permute(0, 1, 3, 2, 4).reshape(1, 16, 16)
    want, _ = brute_force_ratio(cell, canvas_cells(augmented.images)[:, pos])
    assert float(nearest_ratios(augmented, local, mixed2, level="canvas")["ratio"][0]) == pytest.approx(want, rel=1e-7)  # summation order


def test_the_cell_level_takes_the_worst_cell_among_all_training_cells(small):
    matching = next(p for p in small.prompts if p.get("memorization") == "matching")
    target = small.images[matching["targets"][0]]
    g = torch.Generator().manual_seed(3)
    query = (target + 0.15 * torch.randn(16, 16, generator=g)).clamp(-1, 1)
    c = nearest_ratios(small, matching, query[None], level="cell")
    cells = canvas_cells(small.images).reshape(-1, 8, 8)
    ratios = [brute_force_ratio(q, cells)[0] for q in canvas_cells(query[None])[0]]
    assert float(c["ratio"][0]) == pytest.approx(max(ratios), rel=1e-9)
    exact = nearest_ratios(small, matching, target[None], level="cell")
    assert bool(exact["target_copy"][0]) and float(exact["ratio"][0]) == 0.0
    heldout = next(p for p in small.prompts if p["kind"] == "heldout")
    assert not bool(nearest_ratios(small, heldout, target[None], level="cell")["target_copy"][0])  # no targets


def test_bad_levels_are_refused(augmented):
    with pytest.raises(ValueError, match="level"):
        nearest_ratios(augmented, {}, augmented.images[:1], level="pixel")
    assert COPY_RATIO == pytest.approx(1 / 3) and not math.isnan(COPY_RATIO)


def test_the_replication_level_needs_the_prompts_own_image_nearest_within_half(augmented):
    matching = next(p for p in augmented.prompts if p.get("memorization") == "matching")
    target = augmented.images[matching["targets"][0]]
    other = augmented.images[[i for i in range(len(augmented.images)) if i not in matching["targets"]][0]]
    # points on the segment from the target towards another training canvas: the ratio grows from 0 past 1/3, 1/2, 1
    queries = torch.stack([target + t * (other - target) for t in (0.0, 0.1, 0.3, 0.4, 0.45, 0.7)])
    c = nearest_ratios(augmented, matching, queries, level="canvas")
    for q, ratio, replica, own, is_target in zip(queries, c["ratio"], c["replica"], c["target_replica"],
                                                 c["nearest_is_target"]):
        want, nearest = brute_force_ratio(q, augmented.images)
        assert bool(replica) == (want < REPLICATION_RATIO)
        assert bool(own) == (want < REPLICATION_RATIO and torch.equal(nearest, target)) and bool(is_target) == torch.equal(nearest, target)
    between = (c["ratio"] >= COPY_RATIO) & (c["ratio"] < REPLICATION_RATIO)
    assert bool(between.any()), "the segment crosses the band between the two bounds"
    assert not bool((c["copy"] & ~c["replica"]).any())  # every verbatim copy is a replica
    assert bool(c["target_replica"][between].any()) and not bool(c["target_copy"][between].any())
    assert REPLICATION_RATIO == pytest.approx(1 / 2)


def test_target_copies_count_by_the_rule_the_ground_truth_was_measured_with(augmented):
    from memgeo.testbed.truth import generation_copies, target_copies

    matching = next(p for p in augmented.prompts if p.get("memorization") == "matching")
    target = augmented.images[matching["targets"][0]]
    other = augmented.images[[i for i in range(len(augmented.images)) if i not in matching["targets"]][0]]
    queries = torch.stack([target + t * (other - target) for t in (0.0, 0.1, 0.3, 0.4, 0.45, 0.7)])
    ratio_truth = {"criterion": {"level": "canvas", "verbatim": COPY_RATIO, "replication": REPLICATION_RATIO}}
    copies = target_copies(augmented, ratio_truth, matching, queries)
    replicas = target_copies(augmented, ratio_truth, matching, queries, "replication")
    for q, copy, replica in zip(queries, copies, replicas):  # the brute-force ratio and nearest image as oracle
        want, nearest = brute_force_ratio(q, augmented.images)
        own = torch.equal(nearest, target)
        assert bool(copy) == (want < COPY_RATIO and own) and bool(replica) == (want < REPLICATION_RATIO and own)
    assert replicas.sum() > copies.sum()  # the band between the two bounds is crossed
    threshold_truth = {"threshold": 0.5}  # a ground truth from before the ratio rule: its per-cell threshold
    old = target_copies(augmented, threshold_truth, matching, queries)
    assert torch.equal(old, generation_copies(augmented, matching, queries, 0.5)["target"])
    with pytest.raises(ValueError, match="no replication level"):
        target_copies(augmented, threshold_truth, matching, queries, "replication")
    with pytest.raises(ValueError, match="criterion"):
        target_copies(augmented, ratio_truth, matching, queries, "sscd")
    with pytest.raises(ValueError, match="no targets"):
        target_copies(augmented, ratio_truth, {"text": "a", "targets": []}, queries)
