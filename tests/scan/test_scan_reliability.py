"""Scans compute exactly what is missing and report exactly what was asked, whatever the store holds."""

import json

import numpy as np
import pytest
import torch

from memgeo.detect import PRESETS
from memgeo.scan import ScanConfig, read_prompts, run_scan, summarize


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from memgeo.models import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("rel") / "eps", "epsilon")


@pytest.fixture(scope="module")
def model(tiny):
    from memgeo.models import DiffusersScoreModel

    return DiffusersScoreModel.from_pretrained(tiny)


def records_of(tmp_path, name, lines):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return read_prompts(path)


def n_rows(path):
    return len(path.read_text().splitlines()) - 1



def test_edits_new_signals_and_new_settings_compute_exactly_what_is_missing(tmp_path, model):
    out = tmp_path / "r.jsonl"
    first = records_of(tmp_path, "p.txt", ["a dog", "the sea"])
    cfg = ScanConfig(signals=("guidance_norm",), seeds=(0, 1), n_steps=5)
    base = run_scan(model, first, out, cfg, progress=False)
    assert n_rows(out) == 4
    # a prompt inserted at the top of the file: only it is computed; the others keep their values
    edited = records_of(tmp_path, "p.txt", ["a cat", "a dog", "the sea"])
    res = run_scan(model, edited, out, cfg, progress=False)
    assert n_rows(out) == 6
    np.testing.assert_array_equal(res.scores("guidance_norm")[1:], base.scores("guidance_norm"))
    # a new signal, and a new setting of an old one, are computed beside the old rows, never mixed with them
    cfg2 = ScanConfig(signals=("guidance_norm", "anisotropy"), seeds=(0, 1), n_steps=5, options={"anisotropy": {"weights": "sd1"}})
    run_scan(model, edited, out, cfg2, progress=False)
    assert n_rows(out) == 12
    cfg3 = ScanConfig(signals=("anisotropy",), seeds=(0, 1, 2), n_steps=5, options={"anisotropy": {"weights": "sd2"}})
    res3 = run_scan(model, edited, out, cfg3, progress=False)
    assert n_rows(out) == 12 + 9
    sd1 = run_scan(model, edited, out, cfg2, progress=False).scores("anisotropy")
    assert not np.allclose(res3.scores("anisotropy")[:, :2], sd1)
    comp = [r["extras"] for r in res3.rows("anisotropy")]
    np.testing.assert_allclose(res3.scores("anisotropy").ravel(), [c["norm"] + 0.1 * c["cos"] for c in comp], rtol=1e-6)
    # the summary reports exactly the prompts and seeds asked for, not every row in the file
    only = run_scan(model, first[:1], out, ScanConfig(signals=("guidance_norm",), seeds=(1,), n_steps=5), progress=False)
    assert n_rows(out) == 21
    table, _ = summarize(only)
    assert table.startswith("1 prompts x 1 seeds")


def test_rows_at_other_seeds_are_kept_left_out_and_named(tmp_path, model, capsys):
    out = tmp_path / "r.jsonl"
    recs = records_of(tmp_path, "p.txt", ["a dog", "the sea"])
    run_scan(model, recs, out, ScanConfig(signals=("guidance_norm",), seeds=(0, 1), n_steps=5), progress=False)
    assert "does not use" not in capsys.readouterr().err
    res = run_scan(model, recs, out, ScanConfig(signals=("guidance_norm",), seeds=(1000, 1001), n_steps=5),
                   progress=False)
    err = capsys.readouterr().err
    assert "at seeds 0, 1" in err and "its seeds: 1000, 1001" in err
    assert n_rows(out) == 8 and res.scores("guidance_norm").shape == (2, 2)
    assert {r["seed"] for r in res.rows("guidance_norm")} == {1000, 1001}


def test_prompt_files_of_the_same_name_in_two_folders_do_not_collide(tmp_path, model):
    a = records_of(tmp_path / "a", "p.txt", ["a dog"])
    b = records_of(tmp_path / "b", "p.txt", ["the sea"])
    res = run_scan(model, a + b, tmp_path / "r.jsonl", ScanConfig(signals=("guidance_norm",), seeds=(0,), n_steps=5),
                   progress=False)
    assert [p.text for p in res.prompts] == ["a dog", "the sea"] and np.isfinite(res.scores("guidance_norm")).all()


def test_repeated_prompts_are_scanned_once_and_conflicting_labels_refused(tmp_path, model):
    mem = records_of(tmp_path, "m.jsonl", [json.dumps({"caption": "a dog", "memorized": 1})])
    ordinary = records_of(tmp_path, "o.jsonl", [json.dumps({"caption": "a dog", "memorized": 0})])
    with pytest.raises(ValueError, match="is labelled 1 at .*m.jsonl:0 and 0 at .*o.jsonl:0"):
        run_scan(model, mem + ordinary, tmp_path / "r.jsonl", ScanConfig(signals=("guidance_norm",)), progress=False)
    with pytest.warns(UserWarning, match="1 prompt\\(s\\) appear more than once"):
        res = run_scan(model, mem + mem, tmp_path / "r.jsonl", ScanConfig(signals=("guidance_norm",), n_steps=5),
                       progress=False)
    assert len(res.prompts) == 1 and n_rows(tmp_path / "r.jsonl") == 1


def test_generation_signal_rows_do_not_depend_on_their_neighbours(tmp_path, model):
    recs = records_of(tmp_path, "p.txt", ["a dog", "the sea"])
    cfg = dict(signals=("kappa_delta",), n_steps=3, n_directions=2)
    both = run_scan(model, recs, tmp_path / "a.jsonl", ScanConfig(seeds=(0, 1), **cfg), progress=False)
    alone = run_scan(model, recs[1:], tmp_path / "b.jsonl", ScanConfig(seeds=(1,), **cfg), progress=False)
    # equal to float32 round-off of the batched UNet calls (the value is a mean cosine near 0)
    assert both.scores("kappa_delta")[1, 1] == pytest.approx(alone.scores("kappa_delta")[0, 0], rel=1e-4, abs=1e-6)


def test_a_prompt_over_the_token_limit_is_warned_about(model):
    long = " ".join(["word"] * 200)
    with pytest.warns(UserWarning, match=r"tokens long; the text encoder keeps the first 77"):
        model.embed(long, 1)


def test_the_same_store_refuses_another_model(tmp_path, tiny, model):
    from memgeo.models import DiffusersScoreModel, build_tiny_pipeline

    recs = records_of(tmp_path, "p.txt", ["a dog"])
    cfg = ScanConfig(signals=("guidance_norm",), n_steps=5)
    run_scan(model, recs, tmp_path / "r.jsonl", cfg, progress=False)
    other = DiffusersScoreModel.from_pretrained(build_tiny_pipeline(tmp_path / "v", "v_prediction"))
    with pytest.raises(ValueError, match="holds results of the model"):
        run_scan(other, recs, tmp_path / "r.jsonl", cfg, progress=False)
    assert model.identity == DiffusersScoreModel.from_pretrained(tiny).identity


# ---------------------------------------------------------------------------------------------- command line


def test_two_scans_on_one_out_at_once_write_every_row_once(tmp_path, tiny):
    import os
    import subprocess
    import sys

    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\nthe sea\nan apple\na red door\n")
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "memgeo", "scan", "--model", str(tiny), "--prompts", str(prompts), "--out", str(out),
           "--signals", "guidance_norm", "anisotropy", "--seeds", "2", "--steps", "5", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    keys = [(r["prompt"], r["seed"], r["signal"], r["digest"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 2 * 2


@pytest.mark.parametrize("preset", ["memgeo", "official"])
def test_batched_and_unbatched_scans_agree(tmp_path, model, preset):
    recs = records_of(tmp_path, "p.txt", ["a dog", "the sea", "an apple", "a red door", "a blue boat"])
    cfg = ScanConfig(signals=("guidance_norm", "anisotropy", "sharpness"), seeds=(0, 1), n_steps=4, preset=preset)
    one = run_scan(model, recs, tmp_path / "one.jsonl", cfg, progress=False, batch_size=1)
    many = run_scan(model, recs, tmp_path / "many.jsonl", cfg, progress=False, batch_size=3)
    for name in cfg.signals:
        np.testing.assert_allclose(many.scores(name), one.scores(name), rtol=1e-5, atol=1e-6)
    calls = []
    real = model.eps_pair
    model.eps_pair = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        run_scan(model, recs, tmp_path / "count.jsonl", ScanConfig(signals=("anisotropy",), seeds=(0, 1)),
                 progress=False, batch_size=3)
    finally:
        del model.eps_pair
    assert len(calls) == 2 * 2  # two batches (3 + 2 prompts), two timesteps each


def test_empty_inputs_name_the_argument():
    from memgeo.detect import detection_metrics
    from memgeo.experiments import evaluate_signals, trajectory_traces
    from memgeo.geometry import divergence
    from memgeo.gmm import ConditionalGaussianMixture
    from memgeo.mitigate import calibrate_steering

    mix = ConditionalGaussianMixture.memorization_scenario()
    with pytest.raises(ValueError, match="x must hold at least one point"):
        divergence(lambda z: -z, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="conds must hold at least one"):
        evaluate_signals(mix, [], [])
    with pytest.raises(ValueError, match="conds must hold at least one"):
        calibrate_steering(mix, [], torch.zeros(1, mix.event_shape[0], dtype=torch.float64))
    with pytest.raises(ValueError, match="conds must hold at least one"):
        trajectory_traces(mix, [], [], seeds=1, n_steps=2, guidance_scale=1.0)
    with pytest.raises(ValueError, match="labels and scores are empty"):
        detection_metrics([], [])
    with pytest.raises(ValueError, match="records is empty"):
        run_scan(mix, [], "unused.jsonl", ScanConfig())



def test_signal_options_are_data_and_bad_ones_are_refused():
    from memgeo.detect import SIGNALS

    cfg = ScanConfig(signals=("anisotropy", "flipd"), options={"anisotropy": {"weights": "sd2"}, "flipd": {"t": 21}})
    assert cfg.signal_kwargs("anisotropy")["weights"] == "sd2" and cfg.signal_kwargs("flipd")["t"] == 21
    assert "weights" not in ScanConfig(signals=("anisotropy",)).signal_kwargs("anisotropy")  # unset: the preset decides
    assert PRESETS["anisotropy"]["memgeo"]["weights"] == "auto"
    assert "t" not in ScanConfig(signals=("flipd",)).signal_kwargs("flipd")  # None: the preset decides
    with pytest.raises(ValueError, match="unknown signal"):
        ScanConfig(options={"nope": {}})
    with pytest.raises(ValueError, match="has no option 'scale'"):
        ScanConfig(options={"anisotropy": {"scale": 2}})
    with pytest.raises(ValueError, match="must be one of"):
        ScanConfig(options={"anisotropy": {"weights": "sd9"}})
    # every option of every signal is a flag of `memgeo scan`, read back into ScanConfig.options
    from memgeo.cli import build_parser
    from memgeo.cli.scan import signal_options

    import dataclasses

    flags = [o for spec in SIGNALS.values() for o in spec.extra]
    argv = ["scan", "--prompts", "p.txt", "--out", "o.jsonl", "--anisotropy-weights", "sd1", "--flipd-t", "7",
            "--p-laplace-n-directions", "8"]
    args = build_parser().parse_args(argv)
    assert signal_options(args) == {"anisotropy": {"weights": "sd1"}, "flipd": {"t": 7}, "p_laplace": {"n_directions": 8}}
    settable = {(name, f.name) for name, spec in SIGNALS.items() if spec.base is None  # a variant: its base's flags
                for f in dataclasses.fields(spec.settings) if f.metadata["flag"]}
    assert {(name, o.name) for name, spec in SIGNALS.items() for o in spec.extra} == settable  # one flag per field
    assert len({o.flag for o in flags}) == len(flags)
