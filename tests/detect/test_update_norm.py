"""The free detector: the sampler's own update norms equal the differences of the latents it visits, and the signal
is their mean over the first k steps, at the cost of those steps alone."""

import pytest
import torch

from memgeo.detect import SIGNALS, update_norm
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sampling import ddim_sample, initial_noise


@pytest.fixture(scope="module")
def mix():
    return ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)


def test_update_norms_are_the_differences_of_the_visited_latents(mix):
    x_T = initial_noise(mix, 5)
    seen = []

    def record(model, state):  # brute force: every latent the sampler visits
        seen.append(state.x.clone())
        return torch.zeros(state.x.shape[0], dtype=state.x.dtype)

    res = ddim_sample(mix, 1, x_T, n_steps=12, trackers={"x": record})
    path = torch.stack([*seen, res.x0])
    expected = (path[1:] - path[:-1]).flatten(2).norm(dim=-1)
    torch.testing.assert_close(res.update_norms, expected, rtol=1e-12, atol=1e-12)
    short = ddim_sample(mix, 1, x_T, n_steps=12, stop_after=3)
    torch.testing.assert_close(short.update_norms, expected[:3], rtol=1e-12, atol=1e-12)
    assert short.n_evals == 6 and len(short.timesteps) == 3
    with pytest.raises(ValueError, match="stop_after"):
        ddim_sample(mix, 1, x_T, n_steps=12, stop_after=13)


def test_the_signal_is_the_mean_of_the_first_k_updates_and_free_in_the_registry(mix):
    x_T = initial_noise(mix, 4)
    full = ddim_sample(mix, 0, x_T, n_steps=10)
    r = update_norm(mix, 0, x_T, n_steps=10, k=4)
    torch.testing.assert_close(r.score, full.update_norms[:4].mean(0), rtol=1e-12, atol=1e-12)
    assert r.n_evals == 8 and r.extras["extra_evals"] == 0
    assert SIGNALS["update_norm"].free and not SIGNALS["guidance_norm"].free
    assert SIGNALS["update_norm"](mix, 0, x_T, n_steps=10).n_evals == 6  # both presets: the first 3 steps
    batched = update_norm(mix, [0, 1], torch.cat([x_T[:1], x_T[:1]]), n_steps=10)
    torch.testing.assert_close(batched.score[1:], update_norm(mix, 1, x_T[:1], n_steps=10).score)
    with pytest.raises(ValueError, match="k must be at most"):
        update_norm(mix, 0, x_T, n_steps=2, k=3)
