"""benchmarks/share_sweep.py's crossing table: the first snapshot at which each rung is memorized, per copy level."""

import math

import pytest


@pytest.fixture(scope="module")
def sweep(load_benchmark):
    return load_benchmark("share_sweep.py")


def _ladder(rates: dict, steps: int) -> list[dict]:
    # two rungs, at 0.3% and 0.1% of 64 * steps draws
    return [{"kind": "matching", "duplication": d, "share": s, "views": s * 64 * steps, "rate": rates[d],
             "median_ratio": 0.5} for d, s in ((158, 0.003), (53, 0.001))]


def _run(steps: int, verbatim: dict, replication: dict | None) -> dict:
    R = {"labels": "verbatim", "R4": {"ladder": _ladder(verbatim, steps)}}
    if replication is not None:
        R["replication"] = {"labels": "replication", "R4": {"ladder": _ladder(replication, steps)}}
    return {"steps": steps, "ladder": R["R4"]["ladder"], "R": R}


def _cells(text: str) -> dict:
    rows = [line.strip("|").split("|") for line in text.splitlines()[2:]]
    return {r[0].strip(): [c.strip() for c in r[2:]] for r in rows}


def test_first_snapshot_at_or_above_the_memorized_rate_per_level(sweep):
    runs = [_run(1000, {158: 0.25, 53: 0.0}, {158: 0.5, 53: 0.0}),
            _run(2000, {158: 0.5, 53: 0.25}, {158: 1.0, 53: 0.25}),
            _run(3000, {158: 0.25, 53: 0.25}, {158: 1.0, 53: 0.75})]
    cells = _cells(sweep.crossings(runs))
    # 0.3% of 64 * 2000 draws: 384 views; a later dip below the rate does not move the first crossing
    assert cells["matching x158"] == ["2000, 384", "<= 1000, 192"]  # memorized at the first snapshot: by then
    assert cells["matching x53"] == ["-", "3000, 192"]


def test_a_level_missing_at_an_earlier_snapshot_bounds_the_crossing_from_above(sweep):
    runs = [_run(1000, {158: 0.0, 53: 0.0}, None), _run(2000, {158: 1.0, 53: 0.0}, {158: 1.0, 53: 0.5})]
    cells = _cells(sweep.crossings(runs))
    assert cells["matching x158"] == ["2000, 384", "<= 2000, 384"]
    assert cells["matching x53"] == ["-", "<= 2000, 128"]


def test_a_level_no_snapshot_measured_is_named_so(sweep):
    runs = [_run(1000, {158: 1.0, 53: 0.0}, None)]
    assert _cells(sweep.crossings(runs))["matching x158"] == ["<= 1000, 192", "not measured"]


def test_views_per_single_item_is_a_rungs_views_per_copy(sweep):
    # 64 * 1000 draws over 1,000 items drawn uniformly: 64 views per item, 158 copies of one image seen 158 * 64 times
    ladder = [{"kind": "matching", "duplication": 158, "share": 0.158, "views": 158 * 64.0}]
    assert sweep.single_views(ladder) == pytest.approx(64.0)
    assert math.isnan(sweep.single_views([{"kind": "matching", "duplication": 158, "share": 0.158}]))  # no views kept


def test_against_compares_two_runs_at_common_snapshots_only(sweep):
    this = [_run(8000, {158: 0.0, 53: 0.0}, {158: 1.0, 53: 0.0}), _run(10000, {158: 1.0, 53: 0.0}, None)]
    other = [_run(8000, {158: 0.0, 53: 0.0}, {158: 0.0, 53: 0.0}), _run(12000, {158: 1.0, 53: 1.0}, None)]
    for runs in (this, other):
        for r in runs:
            for R in sweep.levels(r["R"]).values():
                k = sum(x["rate"] >= 0.5 for x in R["R4"]["ladder"])
                R.update(R2={"copy_rate": 0.0}, R3={"ordinary": 0.0, "heldout": 0.0})
                R["R4"]["memorized_by_kind"] = {"matching": k, "template": 0, "local": 0}
    other[0]["ladder"][0]["median_ratio"] = 0.9  # one rung 0.4 higher in the other run, the other rung the same
    rows = [line.split("|")[1:-1] for line in sweep.against(this, other).splitlines()[2:]]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [("8000", "verbatim"), ("8000", "replication")]
    assert rows[0][1].strip() == "+0.200 / 0.200"
    assert "matching 1 / 0" in rows[1][3] and "matching 0 / 0" in rows[0][3]


def test_rungs_of_one_count_are_told_apart_by_their_companions(sweep):
    def ladder(steps):
        return [{"kind": "matching", "duplication": 49, **({"companions": m} if m else {}), "share": 0.001,
                 "views": 0.001 * 64 * steps, "rate": rate, "median_ratio": ratio}
                for m, rate, ratio in ((0, 1.0, 0.2), (49, 0.5, 0.35), (147, 0.25, 0.8))]

    runs = [{"steps": s, "ladder": ladder(s), "R": {"labels": "verbatim", "R4": {"ladder": ladder(s)}}} for s in (1000, 2000)]
    cells = _cells(sweep.table(runs))
    assert cells["matching x49"] == ["64, 0.20, 1.00", "128, 0.20, 1.00"]
    assert cells["matching x49 +49"] == ["64, 0.35, 0.50", "128, 0.35, 0.50"]
    assert cells["matching x49 +147"] == ["64, 0.80, 0.25", "128, 0.80, 0.25"]
    assert _cells(sweep.crossings(runs))["matching x49 +147"] == ["-", "not measured"]
    for r in runs:  # the replication level copies more
        r["R"]["replication"] = {"labels": "replication", "R4": {"ladder": [{**x, "rate": min(1.0, x["rate"] + 0.25)}
                                                                            for x in r["ladder"]]}}
        for x in r["ladder"]:
            if x.get("companions"):
                x["caption_share"] = 49 / (49 + x["companions"])
    cells = _cells(sweep.mixture(runs))
    assert list(cells) == ["matching x49 +49", "matching x49 +147"]  # from the largest share of the caption down
    assert cells["matching x49 +147"] == ["0.25 / 0.50", "0.25 / 0.50"]
    assert sweep.mixture(runs[:0] or [{**runs[0], "ladder": runs[0]["ladder"][:1]}]) == ""  # no companions: no table
