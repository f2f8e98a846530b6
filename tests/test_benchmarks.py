"""Every benchmark script imports, and runs on its smallest setting where that takes under 30 seconds."""

import json

import pytest

from .conftest import BENCHMARKS

SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def test_every_benchmark_is_found():
    assert len(SCRIPTS) >= 6


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_runs_on_its_smallest_setting(path, load_benchmark, tmp_path, monkeypatch, capsys):
    module = load_benchmark(path.name)  # every name it imports from memgeo exists
    assert callable(module.main), f"{path.name} has no main(argv)"
    if module.SMOKE is None:
        pytest.skip(f"{path.name}: its smallest setting takes over 30 s (imports checked)")
    monkeypatch.chdir(tmp_path)
    module.main([a.replace("{tmp}", str(tmp_path)) for a in module.SMOKE])
    assert capsys.readouterr().out.strip(), f"{path.name} printed nothing"


def test_the_explanation_benchmark_refuses_the_label_seeds_before_any_work(load_benchmark, tmp_path):
    bench = load_benchmark("bench_explain.py")
    (tmp_path / "testbed.json").write_text(json.dumps({"prompts": [], "ground_truth": {"seeds": 32}}))
    with pytest.raises(ValueError, match="--seed-start: scoring seeds must be disjoint from the label seeds: 8 in common"):  # seeds 24-31 of 8 from 24
        bench.main(["--model", str(tmp_path), "--seed-start", "24", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_realism_benchmark_refuses_a_start_among_the_label_seeds_before_any_work(load_benchmark, tmp_path):
    bench = load_benchmark("bench_realism.py")
    (tmp_path / "testbed.json").write_text(json.dumps({"prompts": [], "ground_truth": {"seeds": 32}}))
    with pytest.raises(ValueError, match="--seed-start: scoring seeds must be disjoint from the label seeds: 2 in common"):  # seeds 30-33 of 4 from 30
        bench.main(["--model", str(tmp_path), "--seed-start", "30", "--seeds", "4", "--out", str(tmp_path / "r.md")])
    assert not (tmp_path / "r.md").exists()


def test_caption_reading_runs_on_a_testbed_with_companions_and_refuses_one_without(load_benchmark, tmp_path, capsys):
    """The caption-reading benchmark reads the matching prompts whose caption labels other training canvases: on a
    tiny testbed trained with companions it measures them; a testbed without any is refused before anything is
    written."""
    from memgeo.testbed import build_canvas_data, train_testbed

    bench = load_benchmark("bench_caption_reading.py")
    ladder = {"matching": (3, 4), "template": (3,), "local": (3,)}
    data = build_canvas_data(n_single=60, n_ordinary=8, n_heldout=1, ladder=ladder, augment=True, seed=0,
                             companions={"matching": (2, 0), "template": (0,), "local": (0,)})
    train_testbed(tmp_path / "tb", steps=1, batch_size=8, data=data, progress=False)
    bench.main(["--model", str(tmp_path / "tb"), "--seeds", "1", "--steps", "4", "--methods", "none", "guidance:1",
                "--classifier-cells", "2000", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out/caption_reading.json").read_text())
    assert [r["companions"] for r in result["rows"] if r["method"] == "none"] == [2]
    assert "Where mitigated generations" in capsys.readouterr().out
    plain = build_canvas_data(n_single=60, n_ordinary=8, n_heldout=1, ladder=ladder, augment=True, seed=0)
    train_testbed(tmp_path / "plain", steps=1, batch_size=8, data=plain, progress=False)
    with pytest.raises(SystemExit, match="--model: .* has no matching prompt"):
        bench.main(["--model", str(tmp_path / "plain"), "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
