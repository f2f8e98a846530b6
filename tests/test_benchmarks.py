"""Every benchmark script imports, and runs on its smallest setting where that takes under 30 seconds."""

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
    import json

    import pytest

    bench = load_benchmark("bench_explain.py")
    (tmp_path / "testbed.json").write_text(json.dumps({"prompts": [], "ground_truth": {"seeds": 32}}))
    with pytest.raises(ValueError, match="disjoint from the label seeds: 8 in common"):  # seeds 24-31 of 8 from 24
        bench.main(["--model", str(tmp_path), "--seed-start", "24", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
