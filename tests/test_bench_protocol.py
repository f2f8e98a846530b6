"""The protocol benchmark counts a labelled model against the protocol's targets, and stability across snapshots."""

import json

import pytest


def labelled(folder, rates, seeds=32, steps=20000):
    """A model folder whose testbed.json holds one duplicated prompt per (kind, verbatim rate, replica rate), and
    70 ordinary prompts (none copying)."""
    folder.mkdir()
    prompts = [{"text": f"d{i}", "kind": "memorized", "memorization": kind, "duplication": 20, "targets": [i, i + 1000],
                "target_rate": v, "target_replica_rate": r, "copy_rate": v, "replica_rate": r}
               for i, (kind, v, r) in enumerate(rates)]
    prompts += [{"text": f"o{i}", "kind": "ordinary", "duplication": 1, "targets": [5000 + i], "target_rate": 0.0,
                 "target_replica_rate": 0.0, "copy_rate": 0.0, "replica_rate": 0.0} for i in range(70)]
    (folder / "testbed.json").write_text(json.dumps({"prompts": prompts, "n_training_items": 10000, "steps": steps,
                                                    "ground_truth": {"seeds": seeds}}))
    return folder


def test_counts_targets_and_stability(tmp_path, load_benchmark, capsys):
    bench = load_benchmark("bench_protocol.py")
    rates = ([("matching", 0.9, 1.0)] * 10 + [("template", 0.6, 0.8)] * 10 + [("local", 0.5, 0.5)] * 9
             + [("local", 0.3, 0.4)] + [("matching", 0.0, 0.0)] * 11 + [("template", 0.05, 0.1)])
    final = labelled(tmp_path / "final", rates)
    moved = rates[:25] + [("matching", 0.0, 0.0)] * 5 + rates[30:]  # five memorized prompts lost at the snapshot
    snap = labelled(tmp_path / "snap", moved, steps=18000)
    out = tmp_path / "protocol.md"
    bench.main(["--models", str(final), "--snapshots", f"0:{snap}", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())["models"][str(final)]
    assert result["counts"] == {"matching": 10, "template": 10, "local": 9, "graded": 1, "hard negatives": 11,
                                "ordinary and held-out not memorized": 70, "ordinary and held-out": 70}
    assert result["targets_met"] is False  # nine local prompts, not ten
    assert result["stability"][str(snap)] == pytest.approx(1 - 5 / len(rates))
    assert result["against_steps"]["18000"]["local"] == 5 and result["against_steps"]["20000"]["local"] == 9
    curve = result["share_curve"]
    assert {r["share"] for r in curve if r["kind"] == "template"} == {20 / 10000 / 2}
    assert "| no |" in capsys.readouterr().out
    copying = labelled(tmp_path / "copying", rates[:10] + [("template", 0.6, 0.8)] * 10 + [("local", 0.5, 0.5)] * 10
                       + [("matching", 0.0, 0.0)] * 10)
    meta = json.loads((copying / "testbed.json").read_text())
    for p in meta["prompts"][-20:]:  # twenty ordinary prompts copy: 50 not memorized, under the target of 60
        p.update(target_rate=0.9, copy_rate=0.9)
    (copying / "testbed.json").write_text(json.dumps(meta))
    bench.main(["--models", str(copying), "--out", str(tmp_path / "c.md")])
    c = json.loads((tmp_path / "c.json").read_text())["models"][str(copying)]
    assert c["counts"]["ordinary and held-out not memorized"] == 50 and c["targets_met"] is False
    with pytest.raises(ValueError, match="not the protocol's 32"):
        bench.main(["--models", str(labelled(tmp_path / "few", rates, seeds=8))])
    with pytest.raises(ValueError, match="snapshot labelled from 8 seeds"):
        bench.main(["--models", str(final), "--snapshots", f"0:{labelled(tmp_path / 'few_snap', rates, seeds=8)}"])


def test_what_it_takes_reads_the_share_curve(load_benchmark):
    bench = load_benchmark("bench_protocol.py")
    from memgeo.testbed.criteria import criterion

    crit = criterion("verbatim")
    curve = ([{"kind": "matching", "images": 1, "share": s, "rate": r} for s, r in zip(range(1, 7), (0, 0, 0.9, 0, 1, 1))]
             + [{"kind": "template", "images": 2, "share": s, "rate": 1.0} for s in (2, 4)]
             + [{"kind": "local", "images": 1, "share": s, "rate": 0.0} for s in (1, 2)])
    takes = bench.what_it_takes(curve, crit, target=10)
    m = takes["matching"]
    assert (m["memorized"], m["rungs"], m["onset"]) == (3, 6, 5)  # rungs 5 and 6 memorize, rung 4 does not
    assert m["range_from"] == 3 and m["rate_in_range"] == 0.75  # 3 of the 4 rungs from share 3 on
    assert m["needed"] == 14 and m["extra_share"] == (14 - 4) * 4.5
    t = takes["template"]
    assert (t["onset"], t["needed"], t["extra_share"]) == (2, 10, (10 - 2) * 3 * 2)  # two canvases per template prompt
    assert takes["local"]["onset"] is None and takes["local"]["needed"] is None  # nothing memorizes: no rate to use
    assert bench.what_it_takes(curve, crit, target=3)["matching"]["needed"] is None  # the target is met
    tied = [{"kind": "matching", "images": 1, "share": s, "rate": r} for s, r in ((1, 1.0), (1, 0.0), (2, 1.0))]
    assert bench.what_it_takes(tied, crit, target=2)["matching"]["onset"] == 2  # a rung at share 1 does not memorize
    assert bench.what_it_takes(tied[:2], crit, target=2)["matching"]["onset"] is None
