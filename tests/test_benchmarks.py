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
