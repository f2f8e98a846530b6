"""The copy criteria as objects: validated once, read by every user, never branched on by name elsewhere."""

import re
from pathlib import Path

import pytest

from memgeo.testbed.criteria import COPY_RATIO, CRITERIA, REPLICATION_RATIO, criterion
from memgeo.testbed.labels import memorization_rate

PACKAGE = Path(__file__).resolve().parents[2] / "memgeo"


def test_each_criterion_reads_its_own_rates():
    row = {"target_rate": 0.25, "copy_rate": 0.5, "target_replica_rate": 0.75, "replica_rate": 1.0}
    assert memorization_rate(row, "verbatim") == 0.25 and memorization_rate(row, "replication") == 0.75
    no_targets = {"copy_rate": 0.5, "replica_rate": 1.0}
    assert [CRITERIA[n].prompt_rate(no_targets) for n in ("verbatim", "replication")] == [0.5, 1.0]
    assert criterion("verbatim").ratio_below == COPY_RATIO and criterion("replication").ratio_below == REPLICATION_RATIO
    assert criterion(CRITERIA["verbatim"]) is CRITERIA["verbatim"]
    with pytest.raises(ValueError, match="criterion must be one of"):
        criterion("sscd")
    with pytest.raises(ValueError, match="no replication rates"):
        memorization_rate({"copy_rate": 0.1}, "replication")


def test_no_module_branches_on_a_criterion_name():
    pattern = re.compile(r"""[!=]=\s*["'](verbatim|replication)["']|["'](verbatim|replication)["']\s*[!=]=""")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py") if p.name != "criteria.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_a_new_criterion_is_one_entry_of_criteria(monkeypatch):
    """docs/extending.md, "A copy criterion": one Criterion in CRITERIA; the ground truth, the labels, the realism
    checks and the command line read it with no other change."""
    from memgeo.cli import build_parser
    from memgeo.experiments.realism import measure_realism
    from memgeo.testbed import load_testbed, testbed_data, testbed_labels
    from memgeo.testbed.criteria import Criterion
    from memgeo.testbed.truth import memorization_ground_truth

    strict = Criterion("strict", 1 / 4, "target_strict_rate", "strict_rate", "strict copy", "below 1/4", "target_strict",
                       False, ("strict_own", "strict_any", "strict_any", "duplicated_strict_rate"))
    monkeypatch.setitem(CRITERIA, "strict", strict)
    assert build_parser().parse_args(["bench", "--criterion", "strict"]).criterion == "strict"  # the command line
    model, data = load_testbed(), testbed_data()
    prompts = [next(p for p in data.prompts if p["kind"] == k) for k in ("memorized", "ordinary")]
    rows = memorization_ground_truth(model, prompts, seeds=2, n_steps=4, data=data)  # the ground truth
    for r in rows:
        assert r["strict_rate"] <= r["copy_rate"] <= r["replica_rate"]  # a stricter bound, fewer copies
    assert rows[0]["target_strict_rate"] <= rows[0]["target_rate"]
    meta = {"prompts": [{**r, "strict_rate": 0.0, "target_strict_rate": 1.0 if r.get("targets") and r["kind"] ==
                         "memorized" else 0.0} for r in rows], "ground_truth": {"seeds": 2}}
    texts, labels, _ = testbed_labels(meta, criterion="strict")  # the labels
    assert dict(zip(texts, labels)) == {prompts[0]["text"]: 1, prompts[1]["text"]: 0}
    real = measure_realism(model, data, prompts, seeds=1, n_steps=4, guidance_scale=7.5, uncond_seeds=2)
    assert {"strict_own", "strict_any"} <= set(real["prompts"][0]) and "duplicated_strict_rate" in real["unconditional"]
