"""The sampler (memgeo.sampling) against closed forms: deterministic DDIM with the exact score of Gaussian data is an
affine map whose coefficients follow from the Gaussian marginals alone; per-sample guidance equals each row alone;
trackers read the states the sampler visits; initial noise is reproducible per seed."""

import pytest
import torch

from memgeo.gmm import ConditionalGaussianMixture, GaussianMixture
from memgeo.guidance import gap_norm
from memgeo.sampling import GuidanceNormTracker, ddim_sample, initial_noise


def _gaussian(mu, s2):
    law = GaussianMixture(torch.tensor([1.0]), torch.tensor([mu], dtype=torch.float64), torch.tensor([s2]))
    return ConditionalGaussianMixture([law, law])  # both conditions the same law: the gap is zero


def test_ddim_on_gaussian_data_is_the_closed_form_affine_map():
    mu, s2 = [0.5, -1.0, 2.0], 0.3
    model = _gaussian(mu, s2)
    mu = torch.tensor(mu, dtype=torch.float64)
    x_T = initial_noise(model, 4)
    n = 12
    res = ddim_sample(model, 0, x_T, n_steps=n, guidance_scale=7.5)
    # x_t - alpha_t mu = c_t z with z ~ N(0, I): the exact eps is sigma (x - alpha mu) / v, v = alpha^2 s2 + sigma^2,
    # so one deterministic step multiplies c by (alpha' alpha s2 + sigma' sigma) / v
    ts = model.timesteps(n).tolist() + [0]
    c = torch.ones(())
    for t, t_prev in zip(ts[:-1], ts[1:]):
        a, s = float(model.alpha(t)), float(model.sigma(t))
        a2, s2_ = float(model.alpha(t_prev)), float(model.sigma(t_prev))
        c = c * (a2 * a * s2 + s2_ * s) / (a * a * s2 + s * s)
    a_T = float(model.alpha(ts[0]))
    expected = float(model.alpha(0)) * mu + c * (x_T - a_T * mu)
    torch.testing.assert_close(res.x0, expected, rtol=1e-9, atol=1e-9)
    assert res.n_evals == 2 * n


def test_per_sample_guidance_equals_each_row_alone():
    g = torch.Generator().manual_seed(0)
    parts = [GaussianMixture(torch.tensor([0.5, 0.5]), torch.randn(2, 2, generator=g, dtype=torch.float64),
                             torch.tensor([0.05, 0.1])) for _ in range(2)]
    model = ConditionalGaussianMixture(parts)
    x_T = initial_noise(model, 3)
    scales = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    together = ddim_sample(model, 1, x_T, n_steps=8, policy=lambda state, trace: {"guidance_scale": scales}).x0
    for i, w in enumerate(scales.tolist()):
        alone = ddim_sample(model, 1, x_T[i:i + 1], n_steps=8, guidance_scale=w).x0
        torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-10, atol=1e-12)


def test_trackers_read_the_visited_states():
    g = torch.Generator().manual_seed(1)
    parts = [GaussianMixture(torch.tensor([1.0]), torch.randn(1, 2, generator=g, dtype=torch.float64),
                             torch.tensor([0.1])) for _ in range(2)]
    model = ConditionalGaussianMixture(parts)
    x_T = initial_noise(model, 2)
    res = ddim_sample(model, 0, x_T, n_steps=6, trackers={"gap": GuidanceNormTracker()})
    assert res.trace["gap"].shape == (6, 2)
    torch.testing.assert_close(res.trace["gap"][0], gap_norm(model, x_T, int(model.timesteps(6)[0]), 0))


def test_initial_noise_is_reproducible_per_seed_and_checks_its_input():
    model = _gaussian([0.0, 0.0], 1.0)
    torch.testing.assert_close(initial_noise(model, [3]), initial_noise(model, [1, 3])[1:])
    assert initial_noise(model, 4).shape == (4, 2)
    with pytest.raises(ValueError, match="seeds"):
        initial_noise(model, [])
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(model, 0, initial_noise(model, 1), n_steps=2, eta=2.0)
