"""Data for a memorization testbed whose captions say nothing about memorization: 2x2 digit canvases.

Each image is a 16x16 canvas of four 8x8 scikit-learn digits (positions: top left, top right,
bottom left, bottom right), folded space-to-depth into ``4 x 8 x 8`` latents (256 numbers).
Every caption, memorized or not, comes from one grammar: ``"<thickness> <digit>, ..."`` for the
four positions, the thickness being the digit's ink tercile. Which canvases are duplicated is
drawn at random, independently of their content, so nothing in the text tells the classes apart.

Memorization comes from duplication, graded: each duplicated prompt gets a count from a
log-uniform ladder over ``1..32``. Three kinds, as in Stable Diffusion's memorized prompts:

* ``"matching"``: one canvas duplicated under its caption (matching verbatim);
* ``"template"``: one caption over several canvases that all fit it (template verbatim);
* ``"local"``: one position keeps the same digit image in every copy, the rest varies within
  the caption; the prompt's ``"mask"`` marks the duplicated 8x8 region of the 16x16 canvas.

Ordinary evaluation prompts are captions of canvases seen once in training; held-out prompts are
compositions that never appear in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["CanvasData", "build_canvas_data", "position_mask", "ladder_from_shares", "canvas_caption", "parse_caption", "canvas_cells", "to_latents", "to_images",
           "POSITIONS", "KINDS", "DUPLICATION_LADDER"]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "regular", "thick")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
KINDS = ("matching", "template", "local")
DUPLICATION_LADDER = (1, 2, 4, 8, 16, 32)


def to_latents(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` images -> ``[N, 4, H/2, W/2]`` latents (space-to-depth, a coordinate permutation)."""
    return torch.nn.functional.pixel_unshuffle(images.reshape(len(images), 1, *images.shape[-2:]), 2)


def to_images(latents: torch.Tensor) -> torch.Tensor:
    """``[N, 4, h, w]`` latents -> ``[N, 2h, 2w]`` images (the inverse of :func:`to_latents`)."""
    return torch.nn.functional.pixel_shuffle(latents, 2)[:, 0]


def canvas_caption(cells) -> str:
    """The one caption grammar: ``cells`` = four (digit, thickness) pairs in position order."""
    return ", ".join(f"{THICKNESS[k]} {DIGITS[d]}" for d, k in cells)


def parse_caption(text: str) -> list[tuple[int, int]]:
    """The inverse of :func:`canvas_caption`: four (digit, thickness) pairs; ``ValueError`` for
    text outside the grammar."""
    parts = text.split(", ")
    cells = []
    for part in parts:
        words = part.split(" ")
        if len(words) != 2 or words[0] not in THICKNESS or words[1] not in DIGITS:
            cells = None
            break
        cells.append((DIGITS.index(words[1]), THICKNESS.index(words[0])))
    if cells is None or len(cells) != len(POSITIONS):
        raise ValueError(f"text {text!r} is not a canvas caption (four '<thickness> <digit>' items joined by ', ')")
    return cells


def canvas_cells(canvases: torch.Tensor) -> torch.Tensor:
    """``[N, 16, 16]`` canvases -> ``[N, 4, 8, 8]`` cells in position order (top left, top right,
    bottom left, bottom right)."""
    n = len(canvases)
    return canvases.reshape(n, 2, 8, 2, 8).permute(0, 1, 3, 2, 4).reshape(n, 4, 8, 8)


def position_mask(position: int) -> list[list[int]]:
    m = np.zeros((16, 16), dtype=int)
    r, c = divmod(position, 2)
    m[8 * r:8 * r + 8, 8 * c:8 * c + 8] = 1
    return m.tolist()


@dataclass
class CanvasData:
    """Training set and prompt sets of the canvas testbed.

    Attributes:
        digits: the 8x8 digit images ``[M, 8, 8]`` in [-1, 1] (the building blocks).
        canvases: the distinct training canvases ``[N, 16, 16]``.
        layout: the digit image of each position of each canvas ``[N, 4]`` (indices into ``digits``).
        labels: the digit class of each image of ``digits`` ``[M]``.
        items: training items ``(canvas index, caption)``, duplicates included.
        prompts: evaluation prompts ``{"text", "kind" ("memorized" | "ordinary" | "heldout"),
            "memorization" (a kind of :data:`KINDS`, memorized only), "duplication", "targets"
            (canvas indices a copy may match), "mask" (local only)}``.
        settings: the arguments of :func:`build_canvas_data` that rebuild exactly this data.
        bank: the cell images a generated cell is compared with (the digits, or with ``augment`` every
            distinct warped cell instance) ``[B, 8, 8]``.
        cell_ids: the bank index of each cell of each canvas ``[N, 4]`` (``layout`` without ``augment``).
    """

    digits: torch.Tensor
    canvases: torch.Tensor
    layout: torch.Tensor
    labels: torch.Tensor
    items: list[tuple[int, str]]
    prompts: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    bank: torch.Tensor | None = None
    cell_ids: torch.Tensor | None = None
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived tables, computed once

    def __post_init__(self):
        if self.bank is None:  # cells are the digits themselves (the small-data regime)
            self.bank, self.cell_ids = self.digits, self.layout

    @property
    def images(self) -> torch.Tensor:
        """The distinct training images (the canvases)."""
        return self.canvases


def build_canvas_data(*, n_single: int = 2000, n_per_kind: int = 20, n_ordinary: int = 60, n_heldout: int = 30,
                      n_variants: int = 4, seed: int = 0, ladder=DUPLICATION_LADDER, augment: bool = False,
                      companions: dict | None = None) -> CanvasData:
    """Canvases, captions and duplicates (deterministic for a seed).

    ``n_single`` canvases appear once each; ``n_per_kind`` duplicated prompts of each kind get a
    count from ``ladder`` (cycled, shuffled), template prompts spread it over ``n_variants``
    canvases; ``ladder`` may also map each kind of :data:`KINDS` to its own counts, one prompt per count
    (shuffled; ``n_per_kind`` is then unused); ``n_ordinary`` captions of single canvases and ``n_heldout`` never-seen compositions
    are evaluated beside them.

    ``augment``: every cell instance of every canvas gets its own small random affine map (rotation
    within 10 degrees, scale 0.9-1.1, shift within a fifth of the cell), so that no two training
    images share a pixel-identical cell unless one was duplicated: only duplicated images (and the
    kept cell of a local prompt) repeat. Without it (the small-data regime) every cell is one of the
    1,797 scikit-learn digits as it is.

    ``companions`` (with a per-kind ``ladder`` only): per kind, one number per rung of ``ladder[kind]`` (same
    order): how many further canvases, each seen once per epoch like a single, share that duplicated prompt's
    caption, as a LAION caption labels a duplicated image and other images too: the prompt's own distribution then
    mixes the duplicate with the companions (on the fifth SD-regime ladder this did not make copy rates follow the
    mix under guidance 7.5: benchmarks/results/ladder_shared/sd_ladder_shared_share_sweep.md). The companions are distinct
    canvases fitting the caption (for a local prompt, without its kept cell), never targets and never evaluation
    prompts; the prompt records their number (``"companions"``).
    """
    per_kind = isinstance(ladder, dict)
    if per_kind and sorted(ladder) != sorted(KINDS):
        raise ValueError(f"ladder must give counts for each kind of {KINDS} (or be one tuple for all), got {sorted(ladder)}")
    b = _CanvasBuilder(seed, augment)
    singles = []
    for _ in range(n_single):
        cells, text = b.new_caption()
        i = b.add_canvas(b.fill(cells))
        b.items.append((i, text))
        singles.append((i, text))
    _check_companions(companions, ladder)
    rungs = None if per_kind else list(ladder) * math.ceil(n_per_kind / len(ladder))
    prompts = []
    for kind in KINDS:
        counts = list(ladder[kind]) if per_kind else rungs[:n_per_kind]
        order = b.rng.permutation(len(counts)).tolist()  # the same draw and order as permuting the counts themselves
        shared = [int(companions[kind][j]) for j in order] if companions else [0] * len(order)
        for k, m in zip((int(counts[j]) for j in order), shared):
            prompts.append(b.add_duplicated(kind, k, n_variants, m if companions else None))
    for j in b.rng.choice(len(singles), size=n_ordinary, replace=False).tolist():
        i, text = singles[j]
        prompts.append({"text": text, "kind": "ordinary", "duplication": 1, "targets": [i]})
    for _ in range(n_heldout):
        _, text = b.new_caption()
        prompts.append({"text": text, "kind": "heldout", "duplication": 0, "targets": []})
    settings = {"n_single": n_single, "n_per_kind": n_per_kind, "n_ordinary": n_ordinary, "n_heldout": n_heldout,
                "n_variants": n_variants, "seed": seed}
    if augment or per_kind or tuple(ladder) != DUPLICATION_LADDER:  # recorded where they differ from the small-data regime
        settings.update({"ladder": {k: list(v) for k, v in ladder.items()} if per_kind else list(ladder),
                         "augment": bool(augment)})
    if companions:
        settings["companions"] = {k: [int(m) for m in v] for k, v in companions.items()}
    return b.data(prompts, settings)


class _CanvasBuilder:
    """The state of one draw of canvas data: the digit pools, the seeded generator, and the canvases, items and
    captions so far. Every random draw goes through ``rng`` in the order :func:`build_canvas_data` makes them."""

    def __init__(self, seed: int, augment: bool):
        from sklearn.datasets import load_digits

        digits = load_digits()
        raw, self.target = digits.images.astype(np.float64), digits.target
        self.images = torch.tensor(raw / 8.0 - 1.0, dtype=torch.float32)  # [0, 16] -> [-1, 1]
        ink = raw.reshape(len(raw), -1).sum(1)
        thick = np.zeros(len(raw), int)
        for dgt in range(10):  # ink terciles within each digit
            m = self.target == dgt
            thick[m] = np.digitize(ink[m], np.quantile(ink[m], [1 / 3, 2 / 3]))
        self.pools = {(d, k): np.flatnonzero((self.target == d) & (thick == k)) for d in range(10) for k in range(3)}
        self.rng = np.random.default_rng(seed)
        self.seed, self.augment = seed, augment
        self.layout, self.cell_ids, self.sources, self.items, self.used = [], [], [], [], set()

    def random_cells(self):
        return [(int(self.rng.integers(10)), int(self.rng.integers(3))) for _ in range(4)]

    def fill(self, cells, fixed=None):
        """Image indices fitting the cells; ``fixed`` = (position, image index) kept as given."""
        idx = [int(self.rng.choice(self.pools[c])) for c in cells]
        if fixed is not None:
            idx[fixed[0]] = fixed[1]
        return idx

    def instance(self, digit: int) -> int:
        """A new cell instance of ``digit``: the digit itself, or (augmented) its own warped copy."""
        if not self.augment:
            return digit
        self.sources.append(digit)
        return len(self.sources) - 1

    def new_caption(self):
        while True:
            cells = self.random_cells()
            text = canvas_caption(cells)
            if text not in self.used:
                self.used.add(text)
                return cells, text

    def add_canvas(self, idx, reuse: dict | None = None) -> int:
        """A canvas of the digits ``idx``; ``reuse`` = {position: instance} keeps given cell instances."""
        self.cell_ids.append([reuse[q] if reuse and q in reuse else self.instance(d) for q, d in enumerate(idx)])
        self.layout.append(idx)
        return len(self.layout) - 1

    def add_duplicated(self, kind: str, k: int, n_variants: int, companions: int | None) -> dict:
        """A duplicated prompt of ``kind`` seen ``k`` times (and its ``companions``, where given): its row."""
        cells, text = self.new_caption()
        row = {"text": text, "kind": "memorized", "memorization": kind, "duplication": int(k)}
        pos = kept = None
        if kind == "matching":
            i = self.add_canvas(self.fill(cells))
            self.items += [(i, text)] * k
            row["targets"] = [i]
        elif kind == "template":
            variants = [self.add_canvas(self.fill(cells)) for _ in range(min(n_variants, k))]
            self.items += [(variants[j % len(variants)], text) for j in range(k)]
            row["targets"] = variants
        else:
            pos = int(self.rng.integers(4))
            kept = int(self.rng.choice(self.pools[cells[pos]]))
            copies = [self.add_canvas(self.fill(cells, fixed=(pos, kept)))]
            copies += [self.add_canvas(self.fill(cells, fixed=(pos, kept)), reuse={pos: self.cell_ids[copies[0]][pos]})
                       for _ in range(k - 1)]
            self.items += [(i, text) for i in copies]
            row["targets"] = copies
            row["mask"] = position_mask(pos)
        if companions is not None:
            row["companions"] = companions
            for _ in range(companions):  # further canvases under the same caption, each seen once per epoch
                idx = self.fill(cells)
                while kind == "local" and idx[pos] == kept and len(self.pools[cells[pos]]) > 1:
                    idx = self.fill(cells)
                self.items.append((self.add_canvas(idx), text))
        return row

    def data(self, prompts: list, settings: dict) -> CanvasData:
        """The canvases drawn so far, rendered (augmented cells warped), with ``prompts`` and ``settings``."""
        bank = _warp_cells(self.images[torch.tensor(self.sources)], self.seed) if self.augment else self.images
        ids = torch.tensor(self.cell_ids)
        canvases = bank[ids].reshape(-1, 2, 2, 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 16, 16)  # cells in place
        return CanvasData(self.images, canvases, torch.tensor(self.layout), torch.tensor(self.target), self.items,
                          prompts, settings, bank=bank if self.augment else None,
                          cell_ids=ids if self.augment else None)


def _check_companions(companions, ladder) -> None:
    if not companions:
        return
    if not isinstance(ladder, dict):
        raise ValueError("companions needs a per-kind ladder (a dict of counts per kind), got one tuple for all kinds")
    if not isinstance(companions, dict) or sorted(companions) != sorted(KINDS):
        raise ValueError(f"companions must map each kind of {KINDS} to one count per rung, got {companions!r}")
    for kind in KINDS:
        m = list(companions[kind])
        if len(m) != len(ladder[kind]) or not all(isinstance(x, (int, np.integer)) and x >= 0 for x in m):
            raise ValueError(f"companions[{kind!r}] must give one non-negative integer per rung of ladder[{kind!r}] "
                             f"({len(ladder[kind])}), got {m}")


def ladder_from_shares(shares: dict, *, n_single: int, n_variants: int) -> dict:
    """Per-kind duplication counts (a ``ladder`` for :func:`build_canvas_data`) that give each duplicated image
    the share of the training draws that ``shares`` asks for.

    ``shares`` maps each kind of :data:`KINDS` to shares per duplicated image (0.003 is 0.3% of all items); a
    template prompt spreads its count over ``n_variants`` canvases, so its caption takes ``n_variants`` times its
    images' share. The counts are the smallest that give each duplicated image at least its share of the items,
    duplicates included (about ``n_single / (1 - S)`` items for a total duplicated share ``S``).
    """
    if sorted(shares) != sorted(KINDS):
        raise ValueError(f"shares must map each kind of {KINDS} to shares per image, got {sorted(shares)}")
    per_caption = {k: [float(s) * (n_variants if k == "template" else 1) for s in v] for k, v in shares.items()}
    total = sum(sum(v) for v in per_caption.values())
    if not all(s > 0 for v in per_caption.values() for s in v) or total >= 1:
        raise ValueError(f"shares must be positive and sum (captions) to below 1, got {shares}")
    n_items, counts = n_single / (1 - total), None  # singles are the rest of the items
    while True:  # the smallest counts that give each image at least its share of the items they make
        new = {k: tuple(max(2, math.ceil(s * n_items)) for s in per_caption[k]) for k in KINDS}
        if new == counts:
            return counts
        counts, n_items = new, n_single + sum(sum(c) for c in new.values())


def _warp_cells(cells: torch.Tensor, seed: int) -> torch.Tensor:
    """Each 8x8 cell ``[M, 8, 8]`` under its own random affine map (:func:`affine_parameters`, :func:`warp_cells`)."""
    return warp_cells(cells, *affine_parameters(len(cells), seed))


def affine_parameters(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m`` random small affine maps ``(angle [m] in radians, scale [m], shift [m, 2] in cells)``: rotation
    within 10 degrees, scale 0.9-1.1, shift within a fifth of the cell along each axis (x, y)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    angle = (torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(m, generator=g, dtype=torch.float64)
    shift = (torch.rand(m, 2, generator=g, dtype=torch.float64) * 2 - 1) / 5
    return angle, scale, shift


def warp_cells(cells: torch.Tensor, angle, scale, shift) -> torch.Tensor:
    """Cells ``[M, H, W]`` (in [-1, 1], background -1) rotated by ``angle`` and scaled by ``scale`` about their
    centre, then shifted by ``shift`` (a fraction of the cell: 1 / W is one pixel; x right, y down); bilinear,
    background outside."""
    m, h, w = cells.shape
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # the grid maps output to input coordinates
    tx, ty = -2 * shift[:, 0], -2 * shift[:, 1]  # in grid units [-1, 1]: the cell spans 2
    theta = torch.stack([torch.stack([cos, -sin, cos * tx - sin * ty], -1),
                         torch.stack([sin, cos, sin * tx + cos * ty], -1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(cells.dtype), [m, 1, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(cells[:, None] + 1.0, grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out[:, 0] - 1.0
