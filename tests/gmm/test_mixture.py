"""Closed forms of GaussianMixture against autograd and scipy, and its input validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from scipy import stats

from memgeo.gmm import GaussianMixture
from memgeo.gmm import strategies as mst


def _scipy_log_prob(m: GaussianMixture, x: torch.Tensor) -> np.ndarray:
    dens = [
        float(w) * stats.multivariate_normal(mu.numpy(), S.numpy()).pdf(x.numpy())
        for w, mu, S in zip(m.weights, m.means, m.covariances)
    ]
    return np.log(np.sum(dens, axis=0))


@given(mst.mixture_and_points(n_components=__import__("hypothesis").strategies.integers(1, 4)))
def test_log_prob_matches_scipy(case):
    m, x = case
    x = x[:1]  # scipy's pdf underflows far away; keep points where it is representable
    ref = _scipy_log_prob(m, x)
    if np.all(np.isfinite(ref)):
        np.testing.assert_allclose(m.log_prob(x).numpy(), ref, rtol=1e-9, atol=1e-9)


@given(mst.mixture_and_points())
def test_score_is_gradient_of_log_prob(case):
    m, x = case
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.log_prob(xr).sum(), xr)
    torch.testing.assert_close(m.score(x), g, rtol=1e-9, atol=1e-9)


@given(mst.mixture_and_points())
def test_hessian_is_jacobian_of_score_and_symmetric(case):
    m, x = case
    H = m.hessian(x)
    ref = torch.stack([torch.autograd.functional.jacobian(lambda z: m.score(z[None])[0], xi) for xi in x])
    scale = 1.0 + ref.abs().max()
    torch.testing.assert_close(H, ref, rtol=1e-9, atol=1e-9 * scale)
    torch.testing.assert_close(H, H.transpose(-1, -2), rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(m.laplacian(x), torch.diagonal(H, dim1=-2, dim2=-1).sum(-1), rtol=1e-9, atol=1e-9 * scale)


def test_log_prob_finite_far_from_every_mode():
    m = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 0.0]], [1e-3, 1e-3])
    x = torch.tensor([[1e4, -1e4], [300.0, 0.0]])
    lp = m.log_prob(x)
    assert torch.isfinite(lp).all() and torch.isfinite(m.score(x)).all() and torch.isfinite(m.hessian(x)).all()
    # far away the nearest component dominates: log p ~ log(w) + log N(x; mu_2, S)
    ref = math.log(0.5) - math.log(2 * math.pi * 1e-3) - 299.0**2 / (2 * 1e-3)
    assert abs(float(lp[1]) - ref) < 1e-6 * abs(ref)


def test_leading_dimensions_are_batched():
    m = GaussianMixture([0.3, 0.7], torch.randn(2, 3), torch.rand(2, 3) + 0.5)
    x = torch.randn(4, 5, 3)
    assert m.log_prob(x).shape == (4, 5) and m.score(x).shape == (4, 5, 3) and m.hessian(x).shape == (4, 5, 3, 3)
    torch.testing.assert_close(m.score(x)[2, 3], m.score(x[2, 3][None])[0])


@given(mst.mixtures(dims=__import__("hypothesis").strategies.integers(1, 6)), mst.noise_levels(), mst.noise_levels(0.1, 1.0))
def test_noised_is_law_of_alpha_x_plus_sigma_noise(m, sigma, alpha):
    nm = m.noised(alpha, sigma)
    eye = torch.eye(m.dim)
    torch.testing.assert_close(nm.covariances, alpha**2 * m.covariances + sigma**2 * eye)
    torch.testing.assert_close(nm.means, alpha * m.means)
    # moments of alpha X + sigma Z from samples, within 5 standard errors
    g = torch.Generator().manual_seed(0)
    n = 20000
    y = alpha * m.sample(n, generator=g) + sigma * torch.randn(n, m.dim, generator=g)
    mean = (nm.weights[:, None] * nm.means).sum(0)
    se = y.std(0) / math.sqrt(n)
    assert ((y.mean(0) - mean).abs() <= 5 * se + 1e-12).all()


def test_sample_components_and_moments():
    m = GaussianMixture([0.25, 0.75], [[-3.0, 0.0], [3.0, 1.0]], [[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.2]]])
    x, comp = m.sample(40000, generator=torch.Generator().manual_seed(1), return_components=True)
    frac = comp.double().mean()
    assert abs(frac - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 40000)
    cov0 = torch.cov(x[comp == 0].T)
    torch.testing.assert_close(cov0, m.covariances[0], atol=0.08, rtol=0)  # ~5 SE of a sample covariance


def test_covariance_kinds_agree():
    g = torch.Generator().manual_seed(3)
    var = torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.3
    means = torch.randn(2, 4, generator=g, dtype=torch.float64)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    diag = GaussianMixture([0.5, 0.5], means, var)
    full = GaussianMixture([0.5, 0.5], means, torch.diag_embed(var))
    iso = GaussianMixture([0.5, 0.5], means, var[:, 0])
    iso_full = GaussianMixture([0.5, 0.5], means, var[:, 0, None, None] * torch.eye(4))
    for a, b in ((diag, full), (iso, iso_full)):
        torch.testing.assert_close(a.log_prob(x), b.log_prob(x))
        torch.testing.assert_close(a.hessian(x), b.hessian(x))


def test_concatenate_is_weighted_mixture():
    a = GaussianMixture([1.0], [[0.0, 0.0]], [0.5])
    b = GaussianMixture([0.5, 0.5], [[1.0, 1.0], [-1.0, 2.0]], [[[1.0, 0.2], [0.2, 1.0]]] * 2)
    c = GaussianMixture.concatenate([a, b], [0.3, 0.7])
    assert c.kind == "full"
    x = torch.randn(6, 2)
    ref = torch.logaddexp(math.log(0.3) + a.log_prob(x), math.log(0.7) + b.log_prob(x))
    torch.testing.assert_close(c.log_prob(x), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covariances=[1.0, 1.0]), "sum to one"),
        (dict(weights=[-0.5, 1.5], means=[[0.0], [1.0]], covariances=[1.0, 1.0]), "non-negative"),
        (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covariances=[1.0, -1.0]), "covariances"),
        (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (dict(weights=[1.0], means=[[0.0, 0.0]], covariances=[[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        (dict(weights=[1.0], means=[[0.0, float("nan")]], covariances=[1.0]), "means must be finite"),
        (dict(weights=[1.0], means=[0.0, 1.0], covariances=[1.0]), r"means must have shape \[K, d\]"),
        (dict(weights=[0.5, 0.5], means=[[0.0, 1.0]], covariances=[1.0]), "weights must have shape"),
        (dict(weights=[1.0], means=[[0.0, 1.0]], covariances=[[1.0, 1.0, 1.0]]), "covariances must have shape"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_points_and_noise_raise():
    m = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 2\]"):
        m.score(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x must be finite"):
        m.log_prob(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match="x must have dtype"):
        m.score(torch.zeros(1, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        m.noised(1.0, -0.1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        m.noised(0.0, 1.0)
