"""ConditionalGaussianMixture implements the score-model interface exactly."""


import pytest
import torch

from memgeo.gmm import ConditionalGaussianMixture, GaussianMixture


@pytest.fixture(scope="module")
def model():
    return ConditionalGaussianMixture.memorization_scenario(dim=5, n_memorized=2, n_generalizing=3, seed=1)


def test_unconditional_is_prior_weighted_mixture(model):
    x = torch.randn(7, 5)
    t = 500
    logs = torch.stack([model.marginal(t, c).log_prob(x) for c in range(model.n_conditions)], -1)
    ref = torch.logsumexp(logs + model.prior.log(), -1)
    torch.testing.assert_close(model.marginal(t).log_prob(x), ref)


def test_eps_is_minus_sigma_times_score(model):
    x = torch.randn(4, 5)
    for t in (1, 41, 981):
        for c in (None, 0, 3):
            torch.testing.assert_close(model.eps(x, t, c), -model.sigma(t) * model.score(x, t, c))


def test_guidance_gap_is_gradient_of_log_posterior(model):
    """s_c - s_u = grad_x log p_t(c | x) (s_delta, docs/conventions.md), checked by autograd of Bayes' rule."""
    x = torch.randn(3, 5, requires_grad=True)
    t, c = 300, 1
    log_post = model.marginal(t, c).log_prob(x) + model.prior[c].log() - model.marginal(t).log_prob(x)
    (g,) = torch.autograd.grad(log_post.sum(), x)
    torch.testing.assert_close(model.score(x.detach(), t, c) - model.score(x.detach(), t, None), g)


def test_per_row_conditions_and_timesteps(model):
    x = torch.randn(6, 5)
    conds = [0, 1, 2, 0, 4, 1]
    ts = torch.tensor([981, 41, 41, 1, 500, 981])
    out = model.eps(x, ts, conds)
    for i in range(6):
        torch.testing.assert_close(out[i], model.eps(x[i : i + 1], int(ts[i]), conds[i])[0])
    s, H = model.score_and_hessian(x, ts, conds)
    torch.testing.assert_close(H[2], model.marginal(41, 2).hessian(x[2]))


def test_scenario_memorized_point_is_a_mode_of_the_unconditional_law(model):
    assert model.memorized.tolist() == [True, True, False, False, False]
    for c in range(2):
        law = model.data_law(c)
        x_m = law.means  # the duplicated training point
        assert law.n_components == 1 and float(law.eigenvalues.max()) <= 1e-4
        for t in (1, 41):  # p_t has its mode at alpha_t x_m
            s0, H0 = model.marginal(t, None).score_and_hessian(model.alpha(t) * x_m)
            assert float(s0.norm()) < 1e-4 * float(H0.abs().max())  # within ~1e-4 units of a critical point
            assert bool((torch.linalg.eigvalsh(H0) < 0).all())  # and a maximum


def test_interface_validation(model):
    with pytest.raises(ValueError, match="cond must be None or a condition index"):
        model.score(torch.randn(2, 5), 10, 7)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 5\]"):
        model.score(torch.randn(2, 4), 10)
    with pytest.raises(ValueError, match="t must be a scalar timestep or have shape"):
        model.score(torch.randn(2, 5), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="prior|weights"):
        ConditionalGaussianMixture([GaussianMixture([1.0], [[0.0]], [1.0])] * 2, prior=[0.9, 0.3])
