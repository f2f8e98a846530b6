"""Benchmark protocols: how a benchmark's models are trained, labelled and scored, fixed before they train.

A protocol is a JSON file in ``memgeo/testbed/protocols/`` (``sd-bench.json``): the regime (data and shares), the
training schedule (final step, learning-rate decay, weight averaging), the runs (seeds, the one design knob a run
changes), the label seeds and generation settings, the scoring seeds, the criteria and the targets. The training and
labelling commands read it, so a protocol run is trained and labelled exactly as written; every leaderboard refuses
scoring seeds that meet the label seeds (:func:`check_disjoint`).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

__all__ = ["PROTOCOLS_DIR", "SCORING_SEED_START", "protocol_names", "load_protocol", "run_settings", "label_seeds",
           "scoring_seeds", "check_disjoint", "label_seeds_of", "testbed_scoring_seeds", "scoring_start"]

PROTOCOLS_DIR = Path(__file__).resolve().parent / "protocols"

#: Where every testbed leaderboard and trade-off takes its noises from (sd-bench's ``scoring.seed_start``): far
#: above any label seeds, which count from 0.
SCORING_SEED_START = 1000


def protocol_names() -> tuple[str, ...]:
    """The protocols shipped with memgeo, by name."""
    return tuple(sorted(p.stem for p in PROTOCOLS_DIR.glob("*.json")))


@cache
def _read(name: str) -> dict:
    return json.loads((PROTOCOLS_DIR / f"{name}.json").read_text())


def load_protocol(name: str) -> dict:
    """The protocol ``name`` (a copy: editing it changes nothing on disk or for later callers)."""
    if name not in protocol_names():
        raise ValueError(f"protocol must be one of {protocol_names()}, got {name!r}")
    return json.loads(json.dumps(_read(name)))


def run_settings(name: str, run: str) -> dict:
    """The keyword arguments of :func:`memgeo.testbed.train_testbed` that train run ``run`` of protocol ``name``
    exactly as written (regime, steps, schedule, averaging, precision, seed, caption dropout, checkpoints, and the
    snapshots its stability report reads)."""
    proto = load_protocol(name)
    if run not in proto["runs"]:
        raise ValueError(f"run must be one of {sorted(proto['runs'])} (protocol {name!r}), got {run!r}")
    spec, tr = proto["runs"][run], proto["training"]
    marks = [*proto["labels"]["stability_snapshots"], tr["steps"]]  # snapshots kept at every multiple of their gcd
    return {"snapshot_every": math.gcd(*marks), "regime": name, "steps": tr["steps"], "batch_size": tr["batch_size"], "lr": tr["lr"],
            "lr_decay_steps": tr["lr_decay_steps"], "ema_decay": tr["ema_decay"], "precision": tr["precision"],
            "checkpoint_every": tr["checkpoint_every"], "compact": True, "seed": spec["seed"],
            "dropout": proto["regime"]["dropout"],
            "dropout_duplicated": spec.get("dropout_duplicated", proto["regime"]["dropout_duplicated"]),
            "mitigate_rule": spec.get("mitigate_rule")}


def label_seeds(name: str) -> list[int]:
    """The protocol's label seeds (the generations its ground truth is measured on)."""
    a, b = load_protocol(name)["labels"]["seeds"]
    return list(range(a, b))


def scoring_seeds(name: str, n: int) -> list[int]:
    """``n`` scoring seeds of the protocol: from its ``scoring.seed_start`` on, disjoint from its label seeds."""
    start = load_protocol(name)["scoring"]["seed_start"]
    return list(range(start, start + n))


def check_disjoint(scoring, labels, *, arg: str | None = None) -> None:
    """Refuse scoring seeds that meet the label seeds: a detector is never scored on the noises that made its labels.

    ``scoring`` and ``labels``: seed lists (or counts ``n``, meaning seeds ``0..n-1``, as generation counts them);
    ``arg``: the argument that chose the scoring seeds, named in the error."""
    def seeds(s):
        return set(range(s)) if isinstance(s, int) else {int(x) for x in s}

    common = sorted(seeds(scoring) & seeds(labels))
    if common:
        shown = ", ".join(map(str, common[:8])) + (", ..." if len(common) > 8 else "")
        raise ValueError(f"{arg + ': ' if arg else ''}scoring seeds must be disjoint from the label seeds: "
                         f"{len(common)} in common ({shown}); "
                         "score from seeds after the label range (a protocol's scoring.seed_start)")


def label_seeds_of(meta: dict) -> list[int]:
    """The seeds a testbed's ground truth was measured on (``testbed.json``'s ``ground_truth.seeds``: a count ``n``
    means seeds ``0..n-1``); none where it has no ground truth."""
    seeds = (meta.get("ground_truth") or {}).get("seeds", 0)
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


def scoring_start(metas, n: int) -> int:
    """The first of ``n`` seeds to generate from for the testbeds ``metas`` (``testbed.json`` contents): where any
    records label seeds, :data:`SCORING_SEED_START`, checked disjoint from all of them; else 0."""
    labelled = sorted({s for meta in metas for s in label_seeds_of(meta)})
    if not labelled:
        return 0
    check_disjoint(range(SCORING_SEED_START, SCORING_SEED_START + n), labelled)
    return SCORING_SEED_START


def testbed_scoring_seeds(meta: dict, n: int) -> list[int]:
    """``n`` seeds to score a testbed on, from :data:`SCORING_SEED_START`, checked disjoint from its label seeds."""
    seeds = list(range(SCORING_SEED_START, SCORING_SEED_START + n))
    check_disjoint(seeds, label_seeds_of(meta))
    return seeds
