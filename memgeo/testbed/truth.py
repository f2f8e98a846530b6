"""Ground truth by generation: which generated canvases copy training images, per prompt."""

from __future__ import annotations

import math

import torch

from ..sampling import ddim_sample, initial_noise
from .canvas import CanvasData, canvas_cells, to_images
from .criteria import COPY_RATIO, CRITERIA, REPLICATION_RATIO, criterion as _criterion
from .folder import testbed_data, testbed_folder

__all__ = ["nearest_neighbour_threshold", "copied_cells", "memorization_ground_truth", "generation_copies", "mask_position",
           "target_copies",
           "nearest_ratios", "copy_gallery", "distinct_rows", "two_nearest", "COPY_RATIO", "REPLICATION_RATIO", "CRITERIA",
           "LEVELS"]

#: What a training image is when the ratio is taken: ``"canvas"`` (the default, in every regime), the whole 16x16
#: canvas (for a local prompt its duplicated cell among the distinct training cells at that position); ``"cell"``,
#: each 8x8 cell among the distinct training cells, a canvas copying where its worst cell does. Measured on the
#: small-data testbed (benchmarks/results/criteria/criterion_small_data.md, its galleries): the cell level calls visibly exact
#: reproductions not copies (a digit's second-nearest training instance is close), the canvas level calls what the
#: gallery shows as copies copies, and never a held-out composition of seen digits (median ratio 0.96).
LEVELS = ("canvas", "cell")


def nearest_neighbour_threshold(images: torch.Tensor, quantile: float = 0.01, *, max_queries: int = 20000,
                                chunk: int = 2048, seed: int = 0) -> float:
    """A copy threshold from the training set's own geometry: the ``quantile`` of the distances
    from each distinct image to its nearest other distinct training image (pixel-identical images count once).

    Batched: queries go through in chunks of ``chunk`` against every image. Above ``max_queries``
    images, the quantile is taken over that many queries drawn at random (every image is still a
    candidate neighbour): at 20,000 queries the 1% quantile's sampling error is about 0.07% in rank. A chunk
    holds at most 50 million distances (400 MB), whatever ``chunk`` asks."""
    flat = distinct_rows(images)[0]  # a repeated image is not its own nearest neighbour
    chunk = max(1, min(chunk, 50_000_000 // len(flat)))
    queries = torch.arange(len(flat))
    if len(flat) > max_queries:
        queries = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:max_queries].sort().values
    nearest = []
    for a in range(0, len(queries), chunk):
        q = queries[a:a + chunk]
        d = torch.cdist(flat[q], flat)
        d[torch.arange(len(q)), q] = math.inf  # not itself
        nearest.append(d.min(1).values)
    return float(torch.quantile(torch.cat(nearest), quantile))


def copied_cells(canvases: torch.Tensor, bank: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which training cell each 8x8 cell of each canvas copies.

    ``bank``: the training cells ``[B, 8, 8]`` (:attr:`CanvasData.bank`: the digits, or every warped
    cell instance of an augmented training set). Returns ``(copied, distance)``, both ``[N, 4]`` in
    position order: the index of the nearest bank cell where it is within ``threshold`` (L2 over the
    cell's 64 pixels), else -1; and the distance to that nearest cell.
    """
    n = len(canvases)
    cells = canvas_cells(canvases).reshape(n * 4, 64).double()
    d = torch.cdist(cells, bank.reshape(len(bank), -1).double())
    dist, nn = d.min(1)
    copied = torch.where(dist < threshold, nn, torch.full_like(nn, -1))
    return copied.reshape(n, 4), dist.reshape(n, 4)


def memorization_ground_truth(
    model,
    prompts: list[dict] | None = None,
    *,
    seeds: int = 8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    data: CanvasData | None = None,
    level: str = "canvas",
    progress: bool = False,
    generations: dict | None = None,
) -> list[dict]:
    """For each prompt, the fraction of its generations that copy training images, by the field's criterion.

    A generation is a verbatim copy when the ratio of its L2 distances to its nearest and second-nearest distinct
    training images is below :data:`COPY_RATIO` (Gu et al. 2025), the image being the whole canvas or each cell
    (``level``, :func:`nearest_ratios`). Per prompt: ``copy_rate`` (copies of any training image), ``ratio`` (the
    median over its generations: memorization graded), ``nearest_target_rate`` (generations whose nearest image is
    the prompt's) and, for prompts with ``targets``, ``target_rate``: copies whose nearest image is one of its
    targets (for a local prompt: its duplicated cell).

    ``prompts`` and ``data`` default to the testbed the model was loaded from. ``generations``: a dict that receives,
    per prompt text, its generated canvases ``[seeds, 16, 16]`` (for :func:`copy_gallery`).
    """
    from tqdm.auto import tqdm

    if data is None:
        data = testbed_data(testbed_folder(model))
    if prompts is None:
        prompts = data.prompts
    x_T = initial_noise(model, seeds)
    out = []
    for p in tqdm(prompts, desc="ground truth", disable=not progress):
        gen = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale).denoised
        canvases = to_images(gen.float())
        if generations is not None:
            generations[p["text"]] = canvases
        c = nearest_ratios(data, p, canvases, level=level)
        row = {**p, "ratio": float(c["ratio"].median()),
               "nearest_target_rate": float(c["nearest_is_target"].double().mean()), "criterion": level}
        for crit in CRITERIA.values():  # each criterion's rates, under its own row keys
            row[crit.any_rate] = float(c[crit.mark].double().mean())
            if p.get("targets"):
                row[crit.rate] = float(c[crit.target].double().mean())
        out.append(row)
    return out


def copy_gallery(data: CanvasData, rows: list[dict], generations: dict, *, per_row: int = 4,
                 level: str = "canvas", criterion: str = "verbatim") -> list[dict]:
    """What the copy criterion calls a copy, to be seen (:func:`memgeo.plotting.plot_copy_gallery`): per kind and
    duplication count (and number of companions sharing its caption) the prompt with the highest rate, then the ordinary and held-out prompts with the highest copy
    rate; each with its target, ``per_row`` of its generations, their nearest training images and ratios.

    ``rows``: :func:`memorization_ground_truth`'s rows; ``generations``: the canvases it collected per prompt;
    ``criterion`` (:data:`CRITERIA`): whose rates pick and label the rows."""
    from .labels import memorization_rate, rung_label

    picked: dict = {}
    for r in rows:
        key = (r.get("memorization") or r["kind"], r.get("duplication", 0) if r["kind"] == "memorized" else 0,
               r.get("companions", 0))
        rate = memorization_rate(r, criterion)
        if key not in picked or rate > picked[key][0]:
            picked[key] = (rate, r)
    out = []
    for (kind, dup, companions), (rate, r) in sorted(picked.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        gens = generations[r["text"]][:per_row]
        c = nearest_ratios(data, r, gens, level=level)
        target = data.images[r["targets"][0]] if r.get("targets") else None
        name = "rate" if _criterion(criterion).headline else f"{criterion} rate"
        out.append({"label": f"{rung_label(kind, dup, companions)}: {name} {rate:.2f}, median ratio {r['ratio']:.2f}",
                    "target": target, "generations": gens.clamp(-1, 1), "nearest": c["nearest"],
                    "ratios": c["ratio"].tolist(), "is_target": c["nearest_is_target"].tolist(),
                    "bound": _criterion(criterion).ratio_below, "mark": _criterion(criterion).mark})
    return out


def generation_copies(data: CanvasData, prompt: dict, canvases: torch.Tensor, threshold: float) -> dict:
    """What each generated canvas ``[N, 16, 16]`` copies (see :func:`memorization_ground_truth`).

    Returns boolean tensors ``"canvases"`` ``[N, canvases]`` (which training canvases it copies),
    ``"canvas"`` ``[N]`` (copies some training canvas), ``"cells"``
    ``[N, 4]`` (each cell copies some training digit) and, when the prompt has targets,
    ``"target"`` ``[N]`` (copies one of them, or its duplicated cell for a local prompt) and
    ``"target_distance"`` ``[N]`` (how far it is from copying one: the distance of its worst cell to the same cell
    of the nearest target, or for a local prompt of its duplicated cell; a copy needs it below ``threshold``); plus
    ``"distance"`` ``[N, 4]``, each cell's distance to its nearest training digit.
    """
    canvases = canvases.clamp(-1, 1)
    copied, dist = copied_cells(canvases, data.bank, threshold)
    layout = data.cell_ids
    hits = (copied[:, None, :] == layout[None]).all(-1)
    out = {"canvases": hits, "canvas": hits.any(1), "cells": copied >= 0, "distance": dist}
    targets = prompt.get("targets") or []
    if targets:
        n = len(canvases)
        apart = (canvas_cells(canvases).reshape(n, 1, 4, 64).double()
                 - canvas_cells(data.images[targets]).reshape(1, len(targets), 4, 64).double()).norm(dim=-1)  # [N, T, 4]
        if prompt.get("memorization") == "local":
            pos = mask_position(prompt["mask"])
            out["target"] = copied[:, pos] == layout[targets[0], pos]
            out["target_distance"] = apart[:, :, pos].min(1).values
        else:
            out["target"] = hits[:, targets].any(1)
            out["target_distance"] = apart.max(2).values.min(1).values
    return out


def target_copies(data: CanvasData, ground_truth: dict, prompt: dict, canvases: torch.Tensor,
                  criterion="verbatim") -> torch.Tensor:
    """Which generated canvases ``[N, 16, 16]`` copy ``prompt``'s own training image ``[N]`` (bool), by the rule the
    testbed's ground truth was measured with (``ground_truth``, its ``testbed.json`` entry): the ratio criterion at
    its level, verbatim or replication (``criterion``, :data:`CRITERIA`), or, for a ground truth from before it
    (a per-cell ``"threshold"``), :func:`generation_copies`. The one place that counts a mitigated generation as a
    copy the way the testbed's labels were counted."""
    crit = _criterion(criterion)
    if not prompt.get("targets"):
        raise ValueError(f"prompt {prompt.get('text')!r} has no targets: only a duplicated prompt copies its own image")
    if "threshold" in ground_truth:
        if not crit.per_cell:
            raise ValueError(f"this testbed's ground truth has no {crit.name} level (a per-cell threshold): "
                             "run `memgeo testbed truth` again, or use criterion='verbatim'")
        return generation_copies(data, prompt, canvases, ground_truth["threshold"])["target"]
    level = (ground_truth.get("criterion") or {}).get("level", "canvas")
    c = nearest_ratios(data, prompt, canvases, level=level)
    return c[crit.target]


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``x`` ``[N, ...]`` (flattened to ``[U, D]``, float64) and, for each row of ``x``, the index
    of its distinct row ``[N]``: every neighbour statistic is taken over distinct images, so that a duplicated
    training image is not its own second-nearest neighbour."""
    flat = x.reshape(len(x), -1).double()
    unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
    return unique, inverse


def _distinct(data: CanvasData, key: str, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`distinct_rows` of ``rows()``, computed once per data set and ``key``."""
    if key not in data.cache:
        data.cache[key] = distinct_rows(rows())
    return data.cache[key]


def two_nearest(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distances of each query row ``[Q, D]`` to its nearest and second-nearest ``bank`` row ``[U, D]``, and the
    nearest row's index (bank rows distinct; one bank row: the second distance is infinite)."""
    d = torch.cdist(queries.double(), bank, compute_mode="donot_use_mm_for_euclid_dist")  # exact: a copy is at 0
    k = min(2, d.shape[1])
    two, idx = d.topk(k, dim=1, largest=False)
    second = two[:, 1] if k == 2 else torch.full_like(two[:, 0], math.inf)
    return two[:, 0], second, idx[:, 0]


def nearest_ratios(data: CanvasData, prompt: dict, canvases: torch.Tensor, *, level: str = "canvas") -> dict:
    """The field's copy criterion for generated canvases ``[N, 16, 16]``: the ratio of each generation's L2 distance
    to its nearest distinct training image over that to the second nearest, and whether the nearest is the prompt's.

    ``level`` (:data:`LEVELS`): at ``"canvas"`` the image is the whole canvas, among the
    distinct training canvases; at ``"cell"`` each of the four cells among the distinct training cells (any position),
    the generation's ratio being its worst cell's. A local prompt (``"mask"``) is judged by its duplicated cell alone:
    among the distinct training cells at that position (``"canvas"``) or all of them (``"cell"``).

    Returns ``"nearest"`` ``[N, 16, 16]``, the nearest training image of each generation as a canvas (at
    ``"cell"`` level each cell's nearest training cell; for a local prompt its cell alone, the rest blank), and
    ``[N]`` tensors: ``"ratio"``; ``"nearest_is_target"`` (the nearest image is one of the prompt's
    ``targets``, every cell for ``"cell"``; False without targets); and for each criterion of :data:`CRITERIA` its
    ``mark`` (``ratio`` under its bound: ``"copy"`` below :data:`COPY_RATIO`, a verbatim copy of some training image;
    ``"replica"`` below :data:`REPLICATION_RATIO`) and its ``target`` (such a generation whose nearest image is the
    prompt's: ``"target_copy"``, ``"target_replica"``).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    canvases = canvases.clamp(-1, 1)
    n = len(canvases)
    targets = list(prompt.get("targets") or [])
    gen_cells = canvas_cells(canvases)  # [N, 4, 8, 8]

    def train_cells():
        return canvas_cells(data.images)  # [M, 4, 8, 8]

    if prompt.get("mask") is not None:  # a local prompt: its duplicated cell
        pos = mask_position(prompt["mask"])
        if level == "canvas":
            bank, inverse = _distinct(data, f"cells at {pos}", lambda: train_cells()[:, pos])
        else:
            bank, inverse = _distinct(data, "cells", lambda: train_cells().reshape(-1, 8, 8))
        d1, d2, nn = two_nearest(gen_cells[:, pos].reshape(n, -1), bank)
        nearest = torch.full((n, 4, 64), -1.0, dtype=torch.float64)
        nearest[:, pos] = bank[nn]
        kept = inverse[targets[0] * (1 if level == "canvas" else 4) + (0 if level == "canvas" else pos)]
        is_target = nn == kept
    elif level == "canvas":
        bank, inverse = _distinct(data, "canvases", lambda: data.images)
        d1, d2, nn = two_nearest(canvases.reshape(n, -1), bank)
        nearest = canvas_cells(bank[nn].reshape(n, 16, 16)).reshape(n, 4, 64)
        is_target = torch.isin(nn, inverse[targets]) if targets else torch.zeros(n, dtype=torch.bool)
    else:
        bank, inverse = _distinct(data, "cells", lambda: train_cells().reshape(-1, 8, 8))
        d1, d2, nn = two_nearest(gen_cells.reshape(n * 4, -1), bank)
        d1, d2, nn = d1.reshape(n, 4), d2.reshape(n, 4), nn.reshape(n, 4)
        nearest = bank[nn]  # [N, 4, 64]
        worst = (d1 / d2).argmax(1, keepdim=True)
        d1, d2 = d1.gather(1, worst)[:, 0], d2.gather(1, worst)[:, 0]
        cells_of = inverse.reshape(-1, 4)  # [M, 4]: each training canvas's distinct cells
        is_target = ((nn[:, None, :] == cells_of[targets][None]).all(-1).any(1) if targets
                     else torch.zeros(n, dtype=torch.bool))
    ratio = torch.where(d2 > 0, d1 / d2, torch.zeros_like(d1))
    nearest = nearest.reshape(n, 2, 2, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, 16, 16).float()
    out = {"ratio": ratio, "nearest_is_target": is_target, "nearest": nearest}
    for c in CRITERIA.values():  # each criterion's generations under its bound, and those nearest the prompt's image
        hit = ratio < c.ratio_below
        out[c.mark], out[c.target] = hit, hit & is_target
    return out


def mask_position(mask) -> int:
    """The position (0..3) of the 8x8 cell a 16x16 mask covers."""
    m = torch.as_tensor(mask)
    if m.shape != (16, 16):
        raise ValueError(f"mask must be a 16x16 list of 0/1 pixel rows, got shape {tuple(m.shape)}")
    cells = m.reshape(2, 8, 2, 8).permute(0, 2, 1, 3).reshape(4, 64).sum(1)
    return int(cells.argmax())
