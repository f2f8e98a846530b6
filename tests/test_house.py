"""The package stays small as it grows (benchmarks/code_metrics.py measures it): no module over 350 lines, no
function over 100 lines, no import cycle, and no function over 10 parameters but the documented entry points."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metrics():
    spec = importlib.util.spec_from_file_location("code_metrics", ROOT / "benchmarks" / "code_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from memgeo.detect import SIGNALS

    return module, module.measure(ROOT / "memgeo", sorted(SIGNALS))


def test_no_module_over_350_lines_and_no_function_over_100(metrics):
    _, m = metrics
    assert not m["modules_over_350"], m["modules_over_350"]
    assert not m["functions_over_100_lines"], m["functions_over_100_lines"]


def test_no_import_cycle(metrics):
    _, m = metrics
    assert not m["import_cycles"], m["import_cycles"]


def test_only_documented_entry_points_take_over_10_parameters(metrics):
    module, m = metrics
    many = {name for name, _ in m["functions_over_10_parameters"]}
    assert many <= set(module.ENTRY_POINTS), f"over 10 parameters, not a documented entry point: {many - set(module.ENTRY_POINTS)}"
    library = (ROOT / "docs" / "library.md").read_text()
    undocumented = [name for name in module.ENTRY_POINTS if f"`{name.rsplit('.', 1)[-1]}`" not in library
                    or "Entry points with many keywords" not in library]
    assert not undocumented, f"docs/library.md does not document the entry points {undocumented}"
