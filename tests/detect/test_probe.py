"""Where post-generation signals probe: the generated sample as it is, or projected to the model's data range; a
model without a data range refuses the projection."""

import pytest
import torch

from memgeo.detect import SIGNALS
from memgeo.detect.common import generate_sample, probe_point
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sampling import initial_noise


@pytest.fixture(scope="module")
def testbed():
    from memgeo.testbed import load_testbed

    return load_testbed()


def test_the_projected_point_is_the_clamped_generation(testbed):
    x_T = initial_noise(testbed, 2)
    prompt = "thin seven, thick two, regular one, thin zero"
    raw, cost = generate_sample(testbed, prompt, x_T, 5, 7.5)
    proj, cost2 = generate_sample(testbed, prompt, x_T, 5, 7.5, "projected")
    assert cost == cost2 == 10 and testbed.data_range == (-1.0, 1.0)
    torch.testing.assert_close(proj, raw.clamp(-1, 1))
    assert bool((raw.abs() > 1).any())  # guidance 7.5 leaves the data range: the projection moves something
    for name in ("flipd", "p_laplace"):
        opts = dict(n_steps=5, generator=torch.Generator().manual_seed(0))
        if name == "flipd":
            opts["t"] = 101
        a = SIGNALS[name](testbed, prompt, x_T, probe="projected", **opts)
        b = SIGNALS[name](testbed, prompt, x_T, x0=raw.clamp(-1, 1), **{**opts, "generator": torch.Generator().manual_seed(0)})
        torch.testing.assert_close(a.value, b.value)


def test_a_model_without_a_data_range_refuses_the_projection():
    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=1, n_generalizing=1, seed=0)
    x = torch.randn(2, 4, dtype=torch.float64)
    assert probe_point(mix, x, "generated") is x
    with pytest.raises(ValueError, match="data_range"):
        probe_point(mix, x, "projected")
    with pytest.raises(ValueError, match="probe must be one of"):
        probe_point(mix, x, "clamped")


def test_the_data_probe_projects_only_where_a_range_is_declared(testbed):
    from memgeo.detect import PRESETS

    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=1, n_generalizing=1, seed=0)
    x = 3 * torch.randn(2, 4, dtype=torch.float64)
    assert probe_point(mix, x, "data") is x
    y = 3 * torch.randn(2, *testbed.event_shape)
    torch.testing.assert_close(probe_point(testbed, y, "data"), y.clamp(-1, 1))
    for name in ("flipd", "p_laplace"):
        assert PRESETS[name]["memgeo"]["probe"] == "data" and PRESETS[name]["official"]["probe"] == "generated"
