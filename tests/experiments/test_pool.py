"""The pooled leaderboard: per-model prompt-level AUROC against scikit-learn, the hard-negative column, the
duplication baseline, intervals over models and prompts, and Kendall's tau across models."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from memgeo.cli import main
from memgeo.experiments.pool import (DUPLICATION_BASELINE, check_poolable, pool_leaderboards, prompt_auroc,
                                     read_leaderboard)


def write_board(folder, seed, n=30, seeds=2):
    """A synthetic leaderboard.json: ten memorized prompts, the rest not, six hard negatives among them."""
    rng = np.random.default_rng(seed)
    labels = [1] * 10 + [0] * (n - 10)
    kinds = ["matching", "template", "local"] * 3 + ["matching"] + ["ordinary"] * (n - 16) + ["template"] * 6
    hard = [False] * (n - 6) + [True] * 6
    dup = [40] * 10 + [1] * (n - 16) + [25] * 6
    good = np.repeat(np.array(labels, float), seeds) + rng.normal(0, 0.7, n * seeds)
    noise = rng.normal(0, 1, n * seeds)
    folder.mkdir()
    (folder / "leaderboard.json").write_text(json.dumps({
        "testbed": folder.name, "seeds": seeds, "texts": [f"p{i}" for i in range(n)], "labels": labels, "kinds": kinds,
        "duplication": dup, "hard_negative": hard,
        "rows": [{"signal": "good", "n_evals": 2, "n_jvps": 0, "scores": good.tolist()},
                 {"signal": "noise", "n_evals": 2, "n_jvps": 0, "scores": noise.tolist()}]}))
    return folder


def test_prompt_auroc_is_sklearns():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 13), np.round(rng.normal(0, 1, 17), 1)
    pos[:3] = neg[:3]  # ties count half
    y = np.r_[np.ones(13), np.zeros(17)]
    assert prompt_auroc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


def test_pooled_cells_are_the_mean_of_per_model_aurocs_within_their_interval(tmp_path):
    boards = [write_board(tmp_path / f"m{i}", i) for i in range(3)]
    table = pool_leaderboards(boards, n_boot=200)
    for column in ("all", "hard negatives", "matching"):
        expected = []
        for b in boards:
            m = read_leaderboard(b)
            neg = (m.labels == 0) & (m.hard_negative if column == "hard negatives" else True)
            pos = (m.labels == 1) & ((np.asarray(m.kinds) == column) if column == "matching" else True)
            expected.append(roc_auc_score(np.r_[np.ones(pos.sum()), np.zeros(neg.sum())],
                                          np.r_[m.scores["good"][pos], m.scores["good"][neg]]))
        value, lo, hi, n = table["rows"]["good"][column]
        assert n == 3 and value == pytest.approx(np.mean(expected)) and lo <= value <= hi
    # the duplication baseline reads the training data: perfect against never-duplicated prompts, not against hard ones
    assert table["rows"][DUPLICATION_BASELINE]["all"][0] > 0.9
    assert table["rows"][DUPLICATION_BASELINE]["hard negatives"][0] == pytest.approx(1.0)
    assert table["counts"][0] == {"model": str(boards[0]), "matching": 4, "template": 3, "local": 3, "hard negatives": 6,
                                  "not memorized": 20}
    assert table["rank_stability"]["signals"] == ["good", "noise"]
    assert all(t == pytest.approx(1.0) for t in table["rank_stability"]["pairs"].values())  # good above noise on each


def test_bench_pool_writes_its_tables_and_refuses_an_old_leaderboard(tmp_path, capsys):
    boards = [str(write_board(tmp_path / f"m{i}", i)) for i in range(2)]
    out = tmp_path / "pooled"
    assert main(["bench", "--pool", *boards, "--out", str(out)]) == 0
    assert (out / "pooled.md").read_text().startswith("Pooled over 2 models")
    assert (out / "rank_stability.png").stat().st_size > 0
    assert main(["bench", "--pool", boards[0], boards[0], "--out", str(tmp_path / "twice")]) == 2
    assert "appears twice" in capsys.readouterr().err
    board = json.loads((tmp_path / "m1" / "leaderboard.json").read_text())
    (tmp_path / "m1" / "leaderboard.json").write_text(json.dumps({**board, "criterion": "replication"}))
    assert main(["bench", "--pool", *boards, "--out", str(tmp_path / "mixed")]) == 2
    assert "different criteria" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    (old / "leaderboard.json").write_text(json.dumps({"seeds": 2, "labels": [], "rows": []}))
    assert main(["bench", "--pool", str(old), "--out", str(tmp_path / "x")]) == 2
    assert "older memgeo" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_pooled_targets_compare_the_pooled_aurocs_by_the_leaderboards_rule(tmp_path):
    from memgeo.experiments import compare_targets, floor_target

    boards = [write_board(tmp_path / f"m{i}", i) for i in range(2)]
    for b in boards:  # registry names: memgeo's gap turn reads the good score, the published guidance norm the noise
        board = json.loads((b / "leaderboard.json").read_text())
        good, noise = (np.asarray(r["scores"]) for r in board["rows"])
        board["rows"] = [{"signal": "gap_turn", "n_evals": 4, "n_jvps": 0, "scores": good.tolist()},
                         {"signal": "guidance_norm", "n_evals": 2, "n_jvps": 0, "scores": noise.tolist()},
                         # free (0 evaluations beyond the generation, though 6 alone): within the 4-evaluation budget
                         {"signal": "update_norm", "n_evals": 6, "n_jvps": 0, "scores": (2 * good).tolist()},
                         {"signal": "kappa_delta", "n_evals": 500, "n_jvps": 0, "scores": good.tolist()}]
        (b / "leaderboard.json").write_text(json.dumps(board))
    table = pool_leaderboards(boards, n_boot=50)
    rows = table["rows"]
    (t,) = table["every_kind_targets"]
    cols = {"overall": "all", "matching": "matching", "template": "template", "local": "local",
            "hard negatives": "hard negatives"}
    aurocs = {s: {k: rows[s][c][0] for k, c in cols.items()} for s in ("gap_turn", "guidance_norm", "update_norm")}
    assert t == compare_targets(aurocs, {"gap_turn": 4, "guidance_norm": 2, "update_norm": 0})[0]
    assert t["best_published"] == "update_norm" and t["overall"] == rows["gap_turn"]["all"][0]
    assert list(t["kinds"]) == ["matching", "template", "local", "hard negatives"]
    assert table["floor_target"] == floor_target([{"signal": "gap_turn", "evals": 4, "auroc": rows["gap_turn"]["all"][0],
                                                   "own": True}])
    for b in boards:  # each model alone: the same rule on its own AUROCs
        (alone,) = table["per_model_targets"][str(b)]["every_kind_targets"]
        m = read_leaderboard(b)
        pos, neg = m.labels == 1, m.labels == 0
        assert alone["overall"] == pytest.approx(prompt_auroc(m.scores["gap_turn"][pos], m.scores["gap_turn"][neg]))
    # a signal that only some models scored takes no part; a pool with no memorized prompt has no targets
    board = json.loads((boards[1] / "leaderboard.json").read_text())
    (boards[1] / "leaderboard.json").write_text(json.dumps({**board, "rows": board["rows"][1:]}))
    assert pool_leaderboards(boards, n_boot=10)["every_kind_targets"] == []  # gap_turn is in one model only
    empty = json.loads((boards[0] / "leaderboard.json").read_text())
    (boards[0] / "leaderboard.json").write_text(json.dumps({**empty, "labels": [0] * len(empty["labels"])}))
    assert pool_leaderboards(boards[:1], n_boot=10)["every_kind_targets"] == []


def test_leaderboards_whose_costs_differ_or_are_missing_are_refused_before_any_work(tmp_path):
    boards = [write_board(tmp_path / f"m{i}", i) for i in range(2)]
    board = json.loads((boards[1] / "leaderboard.json").read_text())
    board["rows"][0]["n_evals"] = 8
    (boards[1] / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(ValueError, match=f"'good' costs 2 evaluations per sample in {boards[0]} and 8 in {boards[1]}"):
        check_poolable([read_leaderboard(b) for b in boards])
    del board["rows"][0]["n_jvps"]
    (boards[1] / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(ValueError, match=r"lacks \['n_jvps'\]: a leaderboard from an older memgeo"):
        read_leaderboard(boards[1])


def test_the_floor_target_takes_the_best_memgeo_detector_within_its_budget():
    from memgeo.experiments import floor_target, format_every_kind_targets

    points = [{"signal": "gap_turn", "evals": 4, "auroc": 0.95, "own": True},
              {"signal": "gap_turn_k3", "evals": 8, "auroc": 0.97, "own": True},
              {"signal": "nan", "evals": 8, "auroc": float("nan"), "own": True},
              {"signal": "kappa_delta", "evals": 500, "auroc": 0.999, "own": False},
              {"signal": "wide", "evals": 17, "auroc": 0.99, "own": True}]
    floor = floor_target(points)
    assert (floor["signal"], floor["met"]) == ("gap_turn_k3", False)
    assert "missed by 0.010" in format_every_kind_targets([], floor=floor)
    assert floor_target(points, max_evals=32)["met"]
    none = floor_target(points[2:4])
    assert none["signal"] is None and not none["met"]
    assert "no memgeo detector to set against the 0.98 target" in format_every_kind_targets([], floor=none)


def test_the_cost_front_keeps_what_no_cheaper_signal_beats():
    from memgeo.experiments.front import cost_front
    from memgeo.experiments.leaderboard import LeaderboardRow

    rng = np.random.default_rng(0)
    y = np.repeat(np.r_[np.ones(8), np.zeros(12)].astype(int), 2)

    def row(name, strength, evals, jvps=0):
        s = strength * y + rng.normal(0, 1, y.size)
        return LeaderboardRow(name, 0.0, 0.0, 0.0, evals, jvps, 0.1, "strict", s, y, None)

    rows = [row("guidance_norm", 1.0, 2), row("update_norm", 0.2, 6), row("sharpness", 3.0, 2, 1),
            row("kappa_delta", 0.5, 500), row("regional_sharpness", 5.0, 4)]
    pts = {q["signal"]: q for q in cost_front(rows, seeds=2)}
    assert pts["update_norm"]["evals"] == 0 and pts["sharpness"]["evals"] == 3  # free; a JVP counted as one
    assert pts["regional_sharpness"]["own"] and not pts["sharpness"]["own"]
    by_cost = sorted(pts.values(), key=lambda q: q["evals"])
    for i, q in enumerate(by_cost):  # on the front: above every cheaper signal, and first at its own cost
        cheaper = [o["auroc"] for o in by_cost if o["evals"] < q["evals"]]
        same = [o["auroc"] for o in by_cost if o["evals"] == q["evals"]]
        assert q["front"] == (q["auroc"] > max(cheaper, default=-1) and q["auroc"] == max(same))
        assert q["low"] <= q["auroc"] <= q["high"]
        s = np.asarray(rows[[r.signal for r in rows].index(q["signal"])].scores).reshape(-1, 2).mean(1)
        assert q["auroc"] == pytest.approx(roc_auc_score(y.reshape(-1, 2)[:, 0], s))
