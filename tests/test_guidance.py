"""The guidance gap and what is built on it (memgeo.guidance), against independent oracles: the gap as
``-sigma_t`` times the gradient of ``log p_t(c | x)`` by autograd of the closed-form mixture densities, the sharpness
against the exact Jacobian, the alignment against a plain cosine, and the objectives against the signals."""

import math

import pytest
import torch

from memgeo.detect import anisotropy, guidance_norm, sharpness
from memgeo.gmm import ConditionalGaussianMixture, GaussianMixture
from memgeo.guidance import (OBJECTIVES, first_timestep, gap_norm, gap_objective, gap_sharpness, guidance_alignment,
                             guidance_gap, objective_times, timestep_value)
from memgeo.sampling import initial_noise


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(0)
    parts = [GaussianMixture(torch.tensor([0.3, 0.7]), torch.randn(2, 3, generator=g, dtype=torch.float64),
                             torch.tensor([0.05, 0.2])) for _ in range(3)]
    return ConditionalGaussianMixture(parts, torch.tensor([0.2, 0.5, 0.3]))


def test_gap_is_minus_sigma_times_the_gradient_of_the_condition_posterior(mixture):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in (50, 400, 900):
        z = x.clone().requires_grad_(True)
        # log p_t(c | x) = log p_t(x | c) + log pi_c - log p_t(x), by autograd of the closed-form densities
        log_post = mixture.marginal(t, 1).log_prob(z) - mixture.marginal(t).log_prob(z)
        (grad,) = torch.autograd.grad(log_post.sum(), z)
        expected = -float(mixture.sigma(t)) * grad
        torch.testing.assert_close(guidance_gap(mixture, x, t, 1), expected, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(gap_norm(mixture, x, t, 1), expected.norm(dim=-1), rtol=1e-8, atol=1e-10)


def test_sharpness_is_the_exact_jacobian_applied_to_the_gap(mixture):
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = 300
    sigma = float(mixture.sigma(t))
    for i in range(x.shape[0]):
        row = x[i:i + 1]
        J = torch.autograd.functional.jacobian(lambda z: guidance_gap(mixture, z, t, 2)[0], row)[:, 0]  # [d, d]
        expected = (J @ guidance_gap(mixture, row, t, 2)[0]).norm() / sigma**2
        torch.testing.assert_close(gap_sharpness(mixture, row, t, 2)[0], expected, rtol=1e-8, atol=1e-12)


def test_alignment_is_the_cosine_and_zero_without_a_gap():
    g = torch.Generator().manual_seed(3)
    eps_u, d = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    expected = torch.nn.functional.cosine_similarity(eps_u, d, dim=-1)
    torch.testing.assert_close(guidance_alignment(eps_u, d), expected)
    assert torch.equal(guidance_alignment(eps_u, torch.zeros_like(d)), torch.zeros(5, dtype=torch.float64))


class _Flow:
    """A schedule whose first timestep is pure noise (alpha = 0), as a flow model's."""

    def timesteps(self, n):
        return torch.linspace(1000.0, 20.0, n, dtype=torch.float64)

    def alpha(self, t):
        return torch.as_tensor(1.0 - float(t) / 1000.0)


def test_first_timestep_skips_pure_noise_and_timestep_values_are_numbers(mixture):
    assert first_timestep(mixture, 10) == timestep_value(mixture.timesteps(10)[0])
    assert isinstance(first_timestep(mixture, 10), int)
    assert first_timestep(_Flow(), 50) == pytest.approx(1000.0 - 980.0 / 49)
    assert timestep_value(torch.tensor(3.0)) == 3 and isinstance(timestep_value(torch.tensor(3.0)), int)
    assert timestep_value(torch.tensor(2.5)) == 2.5


def test_objectives_are_the_signals_they_name(mixture):
    x_T = initial_noise(mixture, 3)
    times = objective_times(mixture, 20)
    value = gap_objective(mixture, x_T, 0, "guidance_norm", times)
    torch.testing.assert_close(value, guidance_norm(mixture, 0, x_T, n_steps=20).score)
    sharp = gap_objective(mixture, x_T, 0, "sharpness", times)
    torch.testing.assert_close(sharp, sharpness(mixture, 0, x_T, n_steps=20).score)
    aniso = gap_objective(mixture, x_T, 0, "anisotropy", times, "sd1")
    torch.testing.assert_close(aniso, anisotropy(mixture, 0, x_T, n_steps=20, weights="sd1", norm="raw", space="eps").score)
    assert {name: o.evaluations for name, o in OBJECTIVES.items()} == {"guidance_norm": 2, "anisotropy": 4, "sharpness": 4}
    with pytest.raises(ValueError, match="objective must be one of"):
        gap_objective(mixture, x_T, 0, "flux", times)
    assert math.isfinite(float(value.sum()))
