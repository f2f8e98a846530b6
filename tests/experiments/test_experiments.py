"""Per-step trajectory detection: traces from one generation pass, AUROCs from those traces."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from memgeo.experiments import per_step_auroc, trajectory_auroc, trajectory_traces
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.guidance import combined_score


def test_per_step_auroc_from_traces():
    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=3, n_generalizing=3, seed=0)
    conds, labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
    kw = dict(seeds=3, n_steps=6, guidance_scale=7.5, n_directions=2)
    kap, mag, y = trajectory_traces(mix, conds, labels, **kw)
    assert kap.shape == mag.shape == (6, 18) and list(y) == [lab for lab in labels for _ in range(3)]
    curves = per_step_auroc(kap, mag, y)
    neg = torch.as_tensor(y == 0)
    for s in range(6):  # memorized trajectories converge: low kappa-delta, high guidance norm
        assert curves["direction (kappa-delta)"][s] == roc_auc_score(y, -kap[s].numpy())
        assert curves["magnitude (guidance norm)"][s] == roc_auc_score(y, mag[s].numpy())
        comb = combined_score(kap[s], mag[s], reference=(kap[s][neg], mag[s][neg]))
        assert curves["combined"][s] == roc_auc_score(y, comb.numpy())
    same = trajectory_auroc(mix, conds, labels, **kw)  # seeded: the same generations again
    for name, v in curves.items():
        np.testing.assert_array_equal(same[name], v)


def test_testbed_labels_come_from_generation_rates():
    from memgeo.testbed import duplication_curve, memorization_rates, testbed_kinds, testbed_labels

    prompts = [
        {"text": "a", "kind": "memorized", "memorization": "matching", "duplication": 32, "targets": [0], "target_rate": 0.9, "copy_rate": 0.9},
        {"text": "b", "kind": "memorized", "memorization": "local", "duplication": 2, "targets": [1], "target_rate": 0.0, "copy_rate": 0.0},
        {"text": "c", "kind": "memorized", "memorization": "template", "duplication": 8, "targets": [2], "target_rate": 0.3, "copy_rate": 0.3},
        {"text": "d", "kind": "ordinary", "duplication": 1, "targets": [3], "target_rate": 0.75, "copy_rate": 0.75},
        {"text": "e", "kind": "heldout", "duplication": 0, "targets": [], "copy_rate": 0.0},
    ]
    texts, labels, counts = testbed_labels({"prompts": prompts})
    assert texts == ["a", "b", "d", "e"] and labels == [1, 0, 1, 0]  # c (0.3) lies in between
    assert counts["memorized"] == {"matching": 1, "ordinary": 1} and counts["left out (rate in between)"] == 1
    assert memorization_rates({"prompts": prompts}, ["e", "c"]) == [0.0, 0.3]
    assert testbed_kinds({"prompts": prompts}, ["a", "d"]) == ["matching", "ordinary"]
    curve = duplication_curve({"prompts": prompts})
    assert [(r["kind"], r["duplication"], r["graded"]) for r in curve] == [
        ("local", 2, 0), ("matching", 32, 0), ("ordinary", 1, 1), ("template", 8, 1)]
    with pytest.raises(ValueError, match="max_rate"):
        testbed_labels({"prompts": prompts}, min_rate=0.1, max_rate=0.5)
    with pytest.raises(ValueError, match="no ground truth"):
        testbed_labels({"prompts": [{"text": "x", "kind": "ordinary"}]})
    # the replication level reads its own rates, and never falls back to the verbatim ones
    replicated = [{**p, "target_replica_rate": min(1.0, p["target_rate"] + 0.5), "replica_rate": p["copy_rate"]}
                  if p.get("targets") else {**p, "replica_rate": p["copy_rate"]} for p in prompts]
    texts, labels, _ = testbed_labels({"prompts": replicated}, criterion="replication")
    assert texts == ["a", "b", "c", "d", "e"] and labels == [1, 1, 1, 1, 0]
    assert memorization_rates({"prompts": replicated}, ["b"], "replication") == [0.5]
    with pytest.raises(ValueError, match="no replication rates"):
        testbed_labels({"prompts": prompts}, criterion="replication")
    with pytest.raises(ValueError, match="criterion"):
        testbed_labels({"prompts": prompts}, criterion="sscd")


def test_regroup_per_prompt_and_on_subsets():
    from memgeo.experiments import LeaderboardRow, format_breakdown, regroup

    rng = np.random.default_rng(0)
    seeds, y = 3, np.array([1, 1, 0, 0, 0, 1])
    s = rng.normal(size=(6, seeds)) + y[:, None]
    row = LeaderboardRow("x", 0, 0, 0, 1, 0, 0.1, "strict", s.reshape(-1), np.repeat(y, seeds))
    p = regroup(row, seeds=seeds, per_prompt=True, n_boot=50)
    assert p.auroc == roc_auc_score(y, s.mean(1)) and p.labels.tolist() == y.tolist()
    keep = np.array([True, False, True, True, True, False])
    k = regroup(row, seeds=seeds, keep=keep, n_boot=50)
    assert k.auroc == roc_auc_score(np.repeat(y[keep], seeds), s[keep].reshape(-1))
    text = format_breakdown([row], seeds=seeds, groups={"first": [True] + [False] * 5, "none": [False] * 6})
    first = regroup(row, seeds=seeds, keep=[True, False, True, True, True, False], per_prompt=True)
    assert f"{first.auroc:.3f}" in text.splitlines()[-1] and text.splitlines()[-1].endswith("| - |")
    with pytest.raises(ValueError, match="multiple of seeds"):
        regroup(row, seeds=4)


def test_every_kind_targets_compare_memgeo_signals_with_the_best_published_one_per_kind():
    from memgeo.experiments import LeaderboardRow, every_kind_targets, format_every_kind_targets

    rng = np.random.default_rng(1)
    seeds, y = 2, np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    kinds = {"a": [True, True, False, False] + [False] * 6, "b": [False, False, True, True] + [False] * 6}

    def row(name, s, evals=4, jvps=0):
        return LeaderboardRow(name, 0, 0, 0, evals, jvps, 0.1, "strict", s.reshape(-1), np.repeat(y, seeds))

    noise = rng.normal(size=(10, seeds))
    ours = row("regional_sharpness", noise + 2 * y[:, None])
    pub_a = row("sharpness", noise + 3 * y[:, None] * np.array(kinds["a"])[:, None], evals=2, jvps=1)
    pub_b = row("p_laplace", rng.normal(size=(10, seeds)) + y[:, None], evals=116)
    heavy = row("regional_sharpness", noise, evals=4, jvps=1)  # over the budget: not a candidate
    caption = row("caption-only baseline", rng.normal(size=(10, seeds)))
    hard = [False] * 4 + [True, True] + [False] * 4
    (t,) = every_kind_targets([ours, pub_a, pub_b, heavy, caption], seeds=seeds, groups=kinds, hard=hard)
    per_prompt = {r.signal: r.scores.reshape(-1, seeds).mean(1) for r in (ours, pub_a, pub_b)}
    best = "sharpness"  # p_laplace (116 evaluations) is over the budget: not compared
    assert t["overall"] == roc_auc_score(y, per_prompt["regional_sharpness"]) and t["best_published"] == best
    assert t["overall_met"] == (t["overall"] >= roc_auc_score(y, per_prompt[best]))
    for name, keep in [*((n, (y == 0) | np.array(m)) for n, m in kinds.items()), ("hard negatives", (y == 1) | hard)]:
        theirs = roc_auc_score(y[keep], per_prompt["sharpness"][keep])
        assert t["kinds"][name]["best_published_auroc"] == theirs
        assert t["kinds"][name]["met"] == (roc_auc_score(y[keep], per_prompt["regional_sharpness"][keep]) >= theirs - 0.02)
    assert t["met"] == (t["overall_met"] and all(k["met"] for k in t["kinds"].values()))
    assert "regional_sharpness | 4 |" in format_every_kind_targets([t])
    assert every_kind_targets([ours], seeds=seeds, groups=kinds) == []  # nothing published to compare with
    free = row("update_norm", noise + 9 * y[:, None], evals=6)  # 6 alone, 0 beyond the generation: within budget
    (t,) = every_kind_targets([ours, pub_a, free], seeds=seeds, groups=kinds, hard=hard)
    assert t["best_published"] == "update_norm" and t["best_published_auroc"] == 1.0


def test_the_fidelity_classifier_reads_the_cells_a_testbed_was_trained_on():
    from memgeo.experiments import caption_fidelity, digit_classifier, fidelity_classifier
    from memgeo.testbed import build_canvas_data

    plain = build_canvas_data(n_single=60, n_per_kind=2, n_ordinary=4, n_heldout=2, ladder=(2, 3), seed=1)
    clf = fidelity_classifier(plain)  # digits placed as they are: the linear classifier of the digits
    np.testing.assert_array_equal(clf.coef_, digit_classifier(plain.digits, plain.labels).coef_)
    warped = build_canvas_data(n_single=400, n_per_kind=2, n_ordinary=20, n_heldout=2, ladder=(2, 3), augment=True,
                               seed=1)
    clf = fidelity_classifier(warped)
    ordinary = [p for p in warped.prompts if p["kind"] == "ordinary"]
    own = np.mean([caption_fidelity(clf, warped.images[p["targets"]], p["text"]).mean() for p in ordinary])
    shuffled = np.mean([caption_fidelity(clf, warped.images[q["targets"]], p["text"]).mean()
                        for p, q in zip(ordinary, ordinary[1:] + ordinary[:1])])
    assert own >= 0.9 and shuffled < 0.5, (own, shuffled)  # each cell read as the digit it was warped from


def test_caption_fidelity_counts_cells_showing_the_captioned_digit():
    from memgeo.experiments import caption_fidelity

    class Stub:  # "classifies" a cell by its mean value: cell value v -> digit round(v * 10) mod 10
        def predict(self, x):
            return np.rint(x.mean(1) * 10).astype(int) % 10

    canvases = torch.zeros(2, 16, 16)
    canvases[0, :8, :8], canvases[0, :8, 8:], canvases[0, 8:, :8], canvases[0, 8:, 8:] = 0.1, 0.2, 0.3, 0.4
    canvases[1, :8, :8] = 0.1  # one cell right, three show zeros
    got = caption_fidelity(Stub(), canvases, "thin one, thick two, regular three, thin four")
    assert got.tolist() == [1.0, 0.25]
    with pytest.raises(ValueError, match="not a canvas caption"):
        caption_fidelity(Stub(), canvases, "a dog")


def test_nearest_unmemorized_captions_counts_differing_words():
    from memgeo.experiments import nearest_unmemorized_captions

    text = "thin six, regular seven, thick eight, thick seven"
    others = ["thin six, regular seven, thick eight, thick seven",  # itself: distance 0, skipped
              "thick six, regular seven, thick eight, thin two",  # words 0, 6, 7 differ
              "thin six, regular one, thick eight, thick nine",  # words 3, 7
              "thin six, thin seven, thick eight, regular seven",  # words 2, 6
              "regular zero, thin one, thin two, thin three"]
    assert nearest_unmemorized_captions(text, others) == (2, [[3, 7], [2, 6]])


def test_explanation_hit_rate_scores_the_top_token_of_each_attribution():
    from memgeo.experiments import explanation_hit_rate, nearest_unmemorized_captions
    from memgeo.explain import token_attribution
    from memgeo.testbed import load_testbed, testbed_data

    model, data = load_testbed(), testbed_data()
    prompts = [next(p for p in data.prompts if p.get("memorization") == k) for k in ("matching", "local")]
    res = explanation_hit_rate(model, data, prompts, seeds=2, n_steps=5)
    copies = Counter(c for _, c in data.items)
    singles = [c for c, k in copies.items() if k == 1]
    for p, row in zip(prompts, res["rows"]):
        att = token_attribution(model, p["text"], space="input", seeds=2, n_steps=5)
        words = [i for i, t in enumerate(att.tokens) if t != ","]
        _, diffs = nearest_unmemorized_captions(p["text"], singles)
        top = max(range(len(att.tokens)), key=lambda i: att.gradient[i])
        assert row["gradient_input"] == pytest.approx(sum(top in {words[i] for i in d} for d in diffs) / len(diffs))
        assert row["chance"] == pytest.approx(sum(len(d) for d in diffs) / len(diffs) / len(att.tokens))
    assert res["local_chance"] == pytest.approx(2 / 11) and 0 <= res["gradient_input_local"] <= 1
    assert res["n_prompts"] == 2 and -1 <= res["spearman_input"] <= 1


def test_localization_auroc_rows_score_the_maps_against_the_masks():
    from memgeo.experiments import localization_auroc
    from memgeo.explain import cross_attention_map, localize, pixel_auroc
    from memgeo.testbed import load_testbed, testbed_metadata

    model = load_testbed()
    p = next(q for q in testbed_metadata()["prompts"] if q.get("memorization") == "local")
    (row,) = localization_auroc(model, [p], seeds=2, n_steps=5)
    loc = localize(model, p["text"], seeds=2, n_steps=5)
    assert row["map"] == pytest.approx(pixel_auroc(loc.map, p["mask"]))
    assert row["cross_attention"] == pytest.approx(pixel_auroc(cross_attention_map(model, p["text"], seeds=2, n_steps=5), p["mask"]))
    assert len(row["per_step"]) == 5 and row["per_step"][loc.step] == pytest.approx(row["map"])
    with pytest.raises(ValueError, match="no mask"):
        localization_auroc(model, [{"text": "thin six, thin one, thin two, thin three"}], seeds=2, n_steps=2)


def test_realism_reads_the_labels_of_the_criterion_it_is_given():
    from memgeo.experiments.realism import realism, realism_verdicts

    def row(kind, memorization, rate, replication, gap, copy=0.0, replica=0.0):
        return {"text": f"{kind}{memorization}{rate}{replication}{gap}", "kind": kind, "memorization": memorization,
                "duplication": 10 if kind == "memorized" else None, "share": 0.003, "rate": rate, "copy_rate": copy,
                "replication_rate": replication, "replica_rate": replica, "ratio": 0.4, "nearest_target_rate": 1.0,
                "gap": [gap, gap]}

    rows = [row("memorized", "matching", 1.0, 1.0, 2.0, 1.0, 1.0), row("memorized", "local", 0.0, 0.75, 3.0, 0.0, 0.75),
            row("memorized", "template", 0.0, 0.25, 0.5), row("ordinary", None, 0.0, 0.0, 1.0),
            row("ordinary", None, 0.0, 0.0, 1.5, replica=0.25), row("heldout", None, 0.0, 0.0, 1.0)]
    result = {"criterion": "canvas", "prompts": rows,
              "unconditional": {"seeds": 4, "copy_rate": 0.0, "duplicated_copy_rate": 0.0, "replica_rate": 0.25,
                                "duplicated_replica_rate": 0.0, "median_ratio": 0.9}}
    verbatim, replication = realism(result), realism(result, criterion="replication")
    assert verbatim["R4"]["memorized_by_kind"] == {"matching": 1, "template": 0, "local": 0}
    assert replication["R4"]["memorized_by_kind"] == {"matching": 1, "template": 0, "local": 1}
    assert verbatim["R4"]["graded"] == 0 and replication["R4"]["graded"] == 2  # 0.75 and 0.25
    assert verbatim["R1"] == [1.0, 1.0]  # the matching prompt (gap 2) above both ordinary ones
    assert replication["R1"] == [1.0, 1.0] and replication["n_ordinary"] == 1  # the 0.25 replica-rate one left out
    assert replication["R3"]["ordinary"] == 0.25 and verbatim["R3"]["ordinary"] == 0.0
    assert not realism_verdicts(replication)["R2"] and realism_verdicts(verbatim)["R2"]
    with pytest.raises(ValueError, match="criterion"):
        realism(result, criterion="sscd")


def test_rungs_that_share_their_caption_are_told_apart_by_their_companions():
    from memgeo.experiments.realism import format_realism, realism
    from memgeo.testbed import duplication_curve, format_duplication_curve

    def row(rate, companions=None, text=""):
        return {"text": f"m{rate}{companions}{text}", "kind": "memorized", "memorization": "matching", "duplication": 49,
                **({"companions": companions} if companions else {}), "share": 0.001, "rate": rate, "copy_rate": rate,
                "replication_rate": rate, "replica_rate": rate, "ratio": 0.5, "nearest_target_rate": rate, "gap": [1.0]}

    rows = [row(1.0), row(1.0, text="b"), row(0.5, 49), row(0.25, 147), {**row(0.0), "kind": "ordinary", "memorization": None}]
    result = {"criterion": "canvas", "prompts": rows,
              "unconditional": {"seeds": 4, "copy_rate": 0.0, "duplicated_copy_rate": 0.0, "replica_rate": 0.0,
                                "duplicated_replica_rate": 0.0, "median_ratio": 0.9}}
    r = realism(result, views=1000)
    ladder = [(x["duplication"], x.get("companions", 0), x["rate"], x.get("caption_share")) for x in r["R4"]["ladder"]]
    assert ladder == [(49, 0, 1.0, None), (49, 49, 0.5, 0.5), (49, 147, 0.25, 0.25)]  # 49 / (49 + companions)
    assert r["R4"]["graded"] == 2
    text = format_realism(r, "t")
    assert "| matching | 49 | 49 (0.50) | 0.100% |" in text and "| matching | 49 | 0 (1.00) | 0.100% |" in text
    plain = format_realism(realism({**result, "prompts": rows[:2] + rows[4:]}), "t")
    assert "companions" not in plain  # no column where no caption has companions
    truth = [{**x, "targets": [0], "target_rate": x["rate"]} for x in rows[:4]]
    curve = duplication_curve({"prompts": truth})
    assert [(x["duplication"], x.get("companions", 0), x["prompts"]) for x in curve] == [(49, 0, 2), (49, 49, 1), (49, 147, 1)]
    assert "| matching | 49 | 147 | 1 | 0.250 | 1 |" in format_duplication_curve(curve)


def test_the_leaderboard_refuses_labels_the_testbed_has_not_measured_before_any_work(tmp_path):
    from memgeo.experiments import run_leaderboards

    lines = []
    old = tmp_path / "old"  # a ground truth from before the replication level
    old.mkdir()
    (old / "testbed.json").write_text(json.dumps({"prompts": [{"text": "a", "kind": "ordinary", "targets": [],
                                                               "copy_rate": 0.0}]}))
    with pytest.raises(ValueError, match="no replication rates"):
        run_leaderboards(testbed_path=old, out_dir=tmp_path / "lb", criterion="replication", print_fn=lines.append)
    assert lines == [] and not (tmp_path / "lb").exists()
    with pytest.raises(ValueError, match="criterion"):
        run_leaderboards(out_dir=tmp_path / "lb", criterion="sscd", print_fn=lines.append)
