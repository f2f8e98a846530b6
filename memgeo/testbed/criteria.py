"""The copy criteria, one object each: the ratio bound a generation's nearest / second-nearest distance must fall
below, the ground-truth keys its rates are kept under, its label thresholds and its realism keys, and its words.

No code outside this module branches on a criterion's name: it asks the object (:func:`criterion`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COPY_RATIO", "REPLICATION_RATIO", "Criterion", "CRITERIA", "criterion"]

#: A generation is a verbatim copy when its L2 distance to the nearest distinct training image is below this
#: fraction of its distance to the second nearest (Gu et al., "On Memorization in Diffusion Models", TMLR 2025,
#: ``sail-sg/DiffMemorize``; Yoon et al. 2023; Bonnaire et al. 2025).
COPY_RATIO = 1 / 3

#: A generation replicates its prompt's training image when that image is its nearest distinct training image and
#: the ratio is below this bound: at least twice as close to it as to any other. A second, looser level beside the
#: verbatim one (as Somepalli et al., CVPR 2023, count replication at SSCD > 0.5), for data where a verbatim copy's
#: own parts do not pass :data:`COPY_RATIO`: on the SD regime's model the cells of verbatim canvas copies lie at a
#: median ratio of 0.41-0.47 among the training cells at their position (benchmarks/results/criteria/criterion_sd_regime.md).
#: Fixed before any detector ran on the second SD ladder; always named as replication, never as a verbatim copy.
REPLICATION_RATIO = 1 / 2


@dataclass(frozen=True)
class Criterion:
    """A copy criterion.

    Attributes:
        name: ``"verbatim"`` or ``"replication"``.
        ratio_below: the bound on a generation's nearest / second-nearest distance ratio.
        rate: the ground-truth row key of a prompt's rate of copies of its own images.
        any_rate: the row key of its rate of copies of any training image (the rate of a prompt without targets).
        mark: what one generation under the bound is called (tables, galleries).
        rule: the rule in words.
        target: the key of :func:`~memgeo.testbed.truth.nearest_ratios` marking a generation that copies the prompt's
            own image by this criterion.
        per_cell: whether a ground truth from before the ratio rule (a per-cell threshold) can be read by it.
        realism: the keys of :func:`~memgeo.experiments.realism.measure_realism`'s rates it reads: a duplicated
            prompt's rate of its own image, any prompt's rate of any image, the unconditional rate, the unconditional
            rate of duplicated images.
        headline: the field's own criterion, which tables and titles need not name (the others are always named).
        min_rate: a prompt at least this often copying is memorized.
        max_rate: a prompt at most this often copying is not memorized (between: graded, left out of labels).
    """

    name: str
    ratio_below: float
    rate: str
    any_rate: str
    mark: str
    rule: str
    target: str
    per_cell: bool
    realism: tuple[str, str, str, str]
    headline: bool = False
    min_rate: float = 0.5
    max_rate: float = 0.1

    def label(self, rate: float) -> str:
        """``"memorized"`` at a rate of at least :attr:`min_rate`, ``"not memorized"`` at most :attr:`max_rate`,
        ``"graded"`` between."""
        return "memorized" if rate >= self.min_rate else "not memorized" if rate <= self.max_rate else "graded"

    def prompt_rate(self, p: dict) -> float:
        """A prompt's memorization rate from its ground-truth row: of its own images where it has targets, else of
        any training image."""
        rate = p.get(self.rate, p.get(self.any_rate))
        if rate is None:
            if "copy_rate" in p:  # ground truth from before the replication level
                raise ValueError(f"the testbed's ground truth has no {self.name} rates: run `memgeo testbed truth` again")
            raise ValueError("the testbed has no ground truth yet: run `memgeo testbed truth` first")
        return float(rate)


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("verbatim", COPY_RATIO, "target_rate", "copy_rate", "copy",
              "below 1/3 (Gu et al. 2025): a verbatim copy", "target_copy", True,
              ("rate", "copy_rate", "copy_rate", "duplicated_copy_rate"), headline=True),
    Criterion("replication", REPLICATION_RATIO, "target_replica_rate", "replica_rate", "replica",
              "below 1/2, the nearest being the prompt's own image: a replica, not a verbatim copy", "target_replica",
              False, ("replication_rate", "replica_rate", "replica_rate", "duplicated_replica_rate")),
)}


def criterion(name) -> Criterion:
    """The criterion ``name`` (a :class:`Criterion` passes through), checked once at the entry point."""
    if isinstance(name, Criterion):
        return name
    if name not in CRITERIA:
        raise ValueError(f"criterion must be one of {tuple(CRITERIA)}, got {name!r}")
    return CRITERIA[name]
