import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) is deterministic and bounded; "thorough" runs with --runslow.
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_default_dtype(torch.float64)
if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers share the cores: one thread each
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    if config.getoption("--runslow") and "HYPOTHESIS_PROFILE" not in os.environ:
        settings.load_profile("thorough")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script under benchmarks/ (not a package) by file name, e.g. ``load_benchmark("share_sweep.py")``."""
    def load(name: str):
        path = BENCHMARKS / name
        spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Tiny SD v1-style (epsilon) and v2-style (v-prediction) pipelines, built offline and saved."""
    from memgeo.models import build_tiny_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    return {pt: build_tiny_pipeline(root / pt, pt) for pt in ("epsilon", "v_prediction")}
