"""Every benchmark script imports, and runs on its smallest setting where that takes under 30 seconds."""

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parent.parent / "benchmarks").glob("bench_*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_found():
    assert len(SCRIPTS) >= 6


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_runs_on_its_smallest_setting(path, tmp_path, monkeypatch, capsys):
    module = _load(path)  # every name it imports from memgeo exists
    assert callable(module.main), f"{path.name} has no main(argv)"
    if module.SMOKE is None:
        pytest.skip(f"{path.name}: its smallest setting takes over 30 s (imports checked)")
    monkeypatch.chdir(tmp_path)
    module.main([a.replace("{tmp}", str(tmp_path)) for a in module.SMOKE])
    assert capsys.readouterr().out.strip(), f"{path.name} printed nothing"
