import pytest


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Tiny SD v1-style (epsilon) and v2-style (v-prediction) pipelines, built offline and saved."""
    from memgeo.sd import build_tiny_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    return {pt: build_tiny_pipeline(root / pt, pt) for pt in ("epsilon", "v_prediction")}
