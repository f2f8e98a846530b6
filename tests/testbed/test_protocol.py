"""The benchmark protocol: read by training, labelling and scoring; label and scoring seeds kept apart; weight
averaging and compact checkpoints as the protocol fixes them."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from memgeo.testbed import TESTBED_DIR, build_canvas_data, train_testbed, weights_fingerprint
from memgeo.testbed.protocol import (
    SCORING_SEED_START,
    check_disjoint,
    label_seeds,
    label_seeds_of,
    load_protocol,
    protocol_names,
    run_settings,
    scoring_seeds,
)
from memgeo.testbed.protocol import testbed_scoring_seeds as scoring_seeds_of
from memgeo.testbed.train import REGIMES


def test_the_embedded_testbed_is_the_protocol_run_it_names():
    """The shipped weights and ground truth are those of the run the protocol names as embedded, byte for byte."""
    run = Path(__file__).resolve().parents[2] / "runs" / f"sd-bench-{load_protocol('sd-bench')['embedded']}"
    assert weights_fingerprint(TESTBED_DIR) == weights_fingerprint(run)
    assert json.loads((TESTBED_DIR / "testbed.json").read_text()) == json.loads((run / "testbed.json").read_text())


def test_the_protocol_fixes_its_design_within_the_data_budget():
    proto = load_protocol("sd-bench")
    assert "sd-bench" in protocol_names() and proto["embedded"] in proto["runs"]
    spec = REGIMES["sd-bench"]
    counts = spec["data"]["ladder"]
    assert [len(counts[k]) for k in ("matching", "template", "local")] == [24, 16, 12]
    n_dup = sum(sum(v) for v in counts.values())
    n_items = spec["data"]["n_single"] + n_dup
    assert n_dup / n_items <= 0.10  # duplicated items at most 10% of the draws
    views = spec["steps"] * 64 / n_items  # a single canvas's expected views by the final step
    assert views <= 24
    for kind, shares in proto["regime"]["shares"].items():  # each rung's count gives at least its share
        per = 2 if kind == "template" else 1
        for c, share in zip(counts[kind], shares):
            assert c / n_items >= share * per * (1 - 1e-9)


def test_the_regime_and_the_constants_are_the_protocol_files():
    from memgeo.testbed.checkpoint import RESUME_WARMUP_STEPS
    from memgeo.testbed.criteria import criterion

    proto = load_protocol("sd-bench")
    spec, reg = REGIMES["sd-bench"], proto["regime"]
    for key in ("n_single", "n_ordinary", "n_heldout", "n_variants", "augment"):
        assert spec["data"][key] == reg[key]
    assert spec["architecture"]["max_length"] == reg["max_length"]
    assert spec["steps"] == proto["training"]["steps"] and spec["dropout_duplicated"] == reg["dropout_duplicated"]
    assert RESUME_WARMUP_STEPS == proto["training"]["resume_warmup_steps"]
    assert SCORING_SEED_START == proto["scoring"]["seed_start"]
    crit = criterion(proto["labels"]["criterion"])
    assert (crit.min_rate, crit.max_rate) == (proto["labels"]["min_rate"], proto["labels"]["max_rate"])
    assert run_settings("sd-bench", "primary-1")["snapshot_every"] == 2000  # 16,000 and 18,000 kept


def test_run_settings_train_a_run_as_written_and_runs_differ_only_where_the_protocol_says():
    a, b, u = (run_settings("sd-bench", r) for r in ("primary-1", "primary-2", "uniform-dropout"))
    assert a["ema_decay"] == 0.999 and a["lr_decay_steps"] == 5000 and a["steps"] == 20000 and a["compact"]
    assert {k for k in a if a[k] != b[k]} == {"seed"}
    assert {k for k in a if a[k] != u[k]} == {"dropout_duplicated"} and u["dropout_duplicated"] == 0.1
    f = run_settings("sd-bench", "fence-filter")  # training-time mitigation on primary-1's data, seed and schedule
    assert {k for k in a if a[k] != f[k]} == {"mitigate_rule"} and f["mitigate_rule"] == "fence"
    with pytest.raises(ValueError, match="run must be one of"):
        run_settings("sd-bench", "primary-9")
    with pytest.raises(ValueError, match="protocol must be one of"):
        load_protocol("nope")


def test_scoring_seeds_never_meet_the_label_seeds():
    labels = label_seeds("sd-bench")
    assert labels == list(range(32))
    assert scoring_seeds("sd-bench", 4) == [1000, 1001, 1002, 1003]
    assert load_protocol("sd-bench")["scoring"]["seed_start"] == SCORING_SEED_START
    check_disjoint(scoring_seeds("sd-bench", 64), labels)
    with pytest.raises(ValueError, match="2 in common"):
        check_disjoint([30, 31, 32], labels)
    with pytest.raises(ValueError, match="disjoint"):
        check_disjoint(4, labels)  # a count means seeds 0..3, as generation counts them
    meta = {"ground_truth": {"seeds": 8}}
    assert label_seeds_of(meta) == list(range(8)) and label_seeds_of({}) == []
    assert scoring_seeds_of(meta, 2) == [1000, 1001]
    with pytest.raises(ValueError, match="disjoint"):
        scoring_seeds_of({"ground_truth": {"seeds": 2000}}, 2)


def test_a_leaderboard_refuses_scoring_seeds_that_made_the_labels(tmp_path, monkeypatch):
    from memgeo.experiments import leaderboard
    from memgeo.testbed import TESTBED_DIR, testbed_metadata

    meta = testbed_metadata(TESTBED_DIR)
    meta["ground_truth"]["seeds"] = list(range(990, 1010))
    import memgeo.testbed as tb

    monkeypatch.setattr(tb, "testbed_metadata", lambda path=None: meta)
    monkeypatch.setattr(leaderboard, "evaluate_signals", lambda *a, **k: pytest.fail("scored before the check"))
    with pytest.raises(ValueError, match="scoring seeds must be disjoint"):
        leaderboard.run_leaderboards(out_dir=tmp_path, seeds=2, mixture_conditions=1, signals=("guidance_norm",),
                                     print_fn=lambda *a: None)


@pytest.fixture(scope="module")
def small():
    return build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=4, n_heldout=2, seed=0)


def test_the_weight_average_follows_its_recursion(tmp_path, small):
    d = 0.9
    kw = dict(batch_size=4, checkpoint_every=1, progress=False, data=small, ema_decay=d)
    train_testbed(tmp_path / "r", steps=2, **kw)
    e2 = load_file(tmp_path / "r/checkpoint/ema_unet.safetensors")
    train_testbed(tmp_path / "r", steps=3, **kw)  # a full checkpoint: resumes bit for bit
    e3 = load_file(tmp_path / "r/checkpoint/ema_unet.safetensors")
    w3 = load_file(tmp_path / "r/checkpoint/unet.safetensors")
    for k in w3:
        if w3[k].is_floating_point():
            torch.testing.assert_close(e3[k], d * e2[k] + (1 - d) * w3[k], rtol=1e-6, atol=1e-7)
    saved = load_file(tmp_path / "r/unet/diffusion_pytorch_model.safetensors")  # the evaluated model is the average
    for k in saved:
        torch.testing.assert_close(saved[k], e3[k].contiguous())


def test_a_compact_checkpoint_holds_half_precision_weights_and_resumes_with_a_warm_up(tmp_path, small):
    kw = dict(batch_size=4, checkpoint_every=2, progress=False, data=small, ema_decay=0.99, compact=True)
    train_testbed(tmp_path / "c", steps=2, **kw)
    ckpt = tmp_path / "c/checkpoint"
    assert not (ckpt / "optimizer.safetensors").exists()
    for name in ("unet", "text_encoder", "ema_unet", "ema_text_encoder"):
        assert {v.dtype for v in load_file(ckpt / f"{name}.safetensors").values() if v.is_floating_point()} == {torch.float16}
    train_testbed(tmp_path / "c", steps=4, **kw)
    state = json.loads((ckpt / "state.json").read_text())
    meta = json.loads((tmp_path / "c/testbed.json").read_text())
    assert state["resumed_at"] == [2] and meta["resumed_at"] == [2] and meta["evaluated_weights"] == "ema"
    assert meta["stored_dtype"] == "float16"
    with pytest.raises(ValueError, match="ema_decay"):  # never resumed under another averaging
        train_testbed(tmp_path / "c", steps=6, **{**kw, "ema_decay": 0.5})


def test_a_save_cut_short_never_mixes_two_steps(tmp_path, small):
    import shutil

    from memgeo.testbed.checkpoint import recover_checkpoint

    kw = dict(batch_size=4, checkpoint_every=2, progress=False, data=small)
    train_testbed(tmp_path / "whole", steps=4, **kw)
    train_testbed(tmp_path / "cut", steps=2, **kw)
    ckpt = tmp_path / "cut/checkpoint"
    assert sorted(p.name for p in (tmp_path / "cut").iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]
    # a stop while the next save was being written: a partial checkpoint.new beside the whole one
    (tmp_path / "cut/checkpoint.new").mkdir()
    shutil.copy(ckpt / "unet.safetensors", tmp_path / "cut/checkpoint.new/unet.safetensors")
    train_testbed(tmp_path / "cut", steps=4, **kw)  # resumes from step 2, bit for bit
    for name in ("unet", "text_encoder", "optimizer"):
        a, b = load_file(tmp_path / f"whole/checkpoint/{name}.safetensors"), load_file(ckpt / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a stop between the two renames: the old checkpoint moved aside, the new one whole but not in place
    ckpt.rename(tmp_path / "cut/checkpoint.new")
    recover_checkpoint(ckpt)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 4
    assert not (tmp_path / "cut/checkpoint.new").exists() and (ckpt / "vocab").is_dir()
    # the new one partial and the old one aside: the old one comes back
    ckpt.rename(tmp_path / "cut/checkpoint.old")
    (tmp_path / "cut/checkpoint.new").mkdir()
    recover_checkpoint(ckpt)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 4 and not (tmp_path / "cut/checkpoint.new").exists()


def test_a_result_names_the_testbed_by_its_folder_and_weights():
    from memgeo.testbed import testbed_name

    digest = weights_fingerprint(TESTBED_DIR)[:12]
    assert testbed_name() == testbed_name(TESTBED_DIR) == f"embedded (UNet {digest})"
    run = Path(__file__).resolve().parents[2] / "runs" / "sd-bench-primary-2"
    assert testbed_name(run) == f"{run} (UNet {weights_fingerprint(run)[:12]})" != testbed_name()


def test_a_fine_tune_is_named_by_its_adapter_and_its_base(tmp_path):
    from memgeo.testbed import build_canvas_data, testbed_name

    small = build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), seed=0)
    train_testbed(tmp_path / "base", steps=1, batch_size=8, data=small, progress=False)
    train_testbed(tmp_path / "ft", regime="finetune", base=tmp_path / "base", steps=1, batch_size=8, data=small,
                  progress=False)
    digest = weights_fingerprint(tmp_path / "base")[:12]
    assert testbed_name(tmp_path / "base") == f"{tmp_path / 'base'} (UNet {digest})"
    name = testbed_name(tmp_path / "ft")
    assert name.startswith(f"{tmp_path / 'ft'} (LoRA ") and name.endswith(f"on {tmp_path / 'base'} (UNet {digest}))")
    run = Path(__file__).resolve().parents[2] / "runs" / "sd-bench-primary-1"  # the same bytes as the embedded
    assert testbed_name(run).endswith(testbed_name().removeprefix("embedded"))
