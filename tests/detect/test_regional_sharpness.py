"""Regional sharpness: the sharpness field by forward difference against the exact JVP, regions against a brute-force
scan, the whole-latent limit against Jeon et al.'s sharpness, rows batched against one at a time."""

import itertools

import pytest
import torch

from memgeo.detect import SIGNALS, regional_sharpness, sharpness
from memgeo.detect.common import region_max, region_windows
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.guidance import gap_sharpness_field
from memgeo.models import DiffusersScoreModel
from memgeo.sampling import initial_noise

PROMPT = "a painting of a lighthouse at dusk"


@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (64, 64), (1, 3)])
def test_regions_cover_every_position_with_the_stated_sides(hw):
    H, W = hw
    regions = region_windows(H, W, 0.5, 0.25)
    seen = torch.zeros(H, W, dtype=torch.bool)
    for r, c in regions:
        assert r.stop - r.start == max(1, round(0.5 * H)) and c.stop - c.start == max(1, round(0.5 * W))
        seen[r, c] = True
    assert bool(seen.all())
    assert len(region_windows(8, 8, 0.5, 0.25)) == 9 and len(region_windows(8, 8, 1.0, 0.25)) == 1


def test_region_max_by_brute_force():
    torch.manual_seed(0)
    f = torch.randn(3, 4, 8, 8)
    # every 4x4 square whose start is a multiple of 2, by hand
    best = torch.stack([torch.stack([f[s, :, i:i + 4, j:j + 4].norm() * 2 for i, j in itertools.product((0, 2, 4), repeat=2)]).max()
                        for s in range(3)])
    torch.testing.assert_close(region_max(f, 0.5, 0.25), best)
    even = torch.ones(2, 4, 8, 8)  # spread evenly: the whole norm
    torch.testing.assert_close(region_max(even, 0.5, 0.25), even.flatten(1).norm(dim=1))
    quarter = torch.zeros(1, 4, 8, 8)
    quarter[:, :, 4:, :4] = 1.0  # all of it in one quarter: twice the whole norm (sqrt(64 / 16))
    torch.testing.assert_close(region_max(quarter, 0.5, 0.25), 2 * quarter.flatten(1).norm(dim=1))
    v = torch.randn(5, 6)  # a vector event is one region
    torch.testing.assert_close(region_max(v, 0.5, 0.25), v.norm(dim=1))


def test_bad_regions_and_steps_are_refused():
    for kw in ({"window": 0.0}, {"window": 1.5}, {"stride": -0.1}, {"window": "half"}):
        with pytest.raises(ValueError, match="fraction of the latent's side"):
            region_windows(8, 8, **{"window": 0.5, "stride": 0.25, **kw})
    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=1, n_generalizing=1, seed=0)
    with pytest.raises(ValueError, match="window must be a fraction"):  # refused before any evaluation, even on a vector
        regional_sharpness(mix, 0, initial_noise(mix, 2), window=0.0)
    with pytest.raises(ValueError, match="step must be a positive number"):
        gap_sharpness_field(mix, initial_noise(mix, 2), 500, 0, step=-0.1)


def test_forward_difference_converges_to_the_jvp(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"], dtype=torch.float64)
    x = initial_noise(model, 2)
    t = model.timesteps(50)[0].item()
    exact = gap_sharpness_field(model, x, t, PROMPT).detach()
    errs = [float((gap_sharpness_field(model, x, t, PROMPT, step=h) - exact).norm() / exact.norm()) for h in (0.2, 0.1, 0.05)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.05, errs  # first order: the error halves with the step
    assert 1.6 < errs[0] / errs[1] < 2.4 and 1.6 < errs[1] / errs[2] < 2.4, errs


def test_whole_latent_limit_is_sharpness_and_rows_batch(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    x = initial_noise(model, 3)
    exact = regional_sharpness(model, PROMPT, x, step=0, window=1.0)  # one region, the JVP: Jeon et al.'s sharpness
    torch.testing.assert_close(exact.value, sharpness(model, PROMPT, x).value)
    assert (exact.n_evals, exact.n_jvps) == (2, 1)
    res = regional_sharpness(model, PROMPT, x)
    assert (res.n_evals, res.n_jvps) == (4, 0)
    assert bool((res.value >= res.extras["whole"] * (1 - 1e-6)).all())  # the largest region is at least the mean one
    prompts = [PROMPT, "a red bicycle", PROMPT]
    together = regional_sharpness(model, prompts, x).value
    alone = torch.cat([regional_sharpness(model, p, x[i:i + 1]).value for i, p in enumerate(prompts)])
    # float32 UNet rows computed in another batch differ by round-off (~1e-6 relative), which the forward difference
    # divides by its step (0.1 sigma_t): up to ~2e-4 relative, measured when another test ran first in the process
    torch.testing.assert_close(together, alone, rtol=1e-3, atol=1e-6)


def test_on_a_mixture_it_is_sharpness_by_forward_difference():
    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)
    x = initial_noise(mix, 4)
    res = SIGNALS["regional_sharpness"](mix, 1, x)
    ref = sharpness(mix, 1, x).value
    torch.testing.assert_close(res.value, ref, rtol=0.02, atol=0.0)  # the difference's O(h) error
    torch.testing.assert_close(res.value, res.extras["whole"])
