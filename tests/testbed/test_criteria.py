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
