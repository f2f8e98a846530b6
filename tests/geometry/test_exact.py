"""Exact geometric formulas against independent oracles (autograd, classical geometry)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from memgeo.geometry import (
    alignment_cosine,
    alignment_cosine_per_position,
    anisotropy_index,
    flipd_from_derivatives,
    mean_curvature_from_derivatives,
    normalized_infinity_laplacian,
    p_laplacian_from_derivatives,
    principal_curvatures_from_derivatives,
)
from memgeo.gmm import GaussianMixture
from memgeo.gmm import strategies as mst

finite_p = st.one_of(st.sampled_from([1.0, 2.0, 3.0]), st.floats(1.0, 4.0, allow_nan=False))


def _autograd_p_laplacian(m: GaussianMixture, x: torch.Tensor, p: float) -> torch.Tensor:
    """div(|s|^(p-2) s) by autograd of the closed-form score (no product formula involved)."""

    def G(z):
        s = m.score(z[None])[0]
        return s.norm() ** (p - 2) * s

    return torch.stack([torch.autograd.functional.jacobian(G, xi).trace() for xi in x])


@given(mst.mixture_and_points(), finite_p)
def test_p_laplacian_formula_equals_divergence_of_power_field(case, p):
    m, x = case
    s, H = m.score_and_hessian(x)
    ref = _autograd_p_laplacian(m, x, p)
    got = p_laplacian_from_derivatives(s, H, p)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8 * (1 + ref.abs().max()))


@given(mst.mixture_and_points())
def test_infinity_laplacian_is_limit_of_scaled_p_laplacian(case):
    m, x = case
    s, H = m.score_and_hessian(x)
    inf_lap = normalized_infinity_laplacian(s, H)
    torch.testing.assert_close(p_laplacian_from_derivatives(s, H, "inf"), inf_lap)
    # Delta_p / ((p - 2) |s|^(p-2)) = tr H / (p - 2) + s_hat^T H s_hat -> Delta_inf, error exactly tr H / (p - 2)
    tr = torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)
    for p in (10.0, 30.0, 100.0):  # |s|^(p-2) stays representable in float64
        scaled = p_laplacian_from_derivatives(s, H, p) / ((p - 2) * s.norm(dim=-1) ** (p - 2))
        torch.testing.assert_close(scaled - inf_lap, tr / (p - 2), rtol=1e-6, atol=1e-9 * (1 + tr.abs().max()))


@given(mst.mixture_and_points(), st.floats(0.01, 100.0))
def test_p1_is_invariant_to_positive_rescaling(case, c):
    m, x = case
    s, H = m.score_and_hessian(x)
    a = p_laplacian_from_derivatives(s, H, 1)
    torch.testing.assert_close(p_laplacian_from_derivatives(c * s, c * H, 1), a, rtol=1e-9, atol=1e-9)


@given(st.integers(2, 12), st.floats(0.1, 5.0), st.floats(0.05, 3.0), st.integers(0, 1000))
def test_curvatures_of_isotropic_gaussian_are_inverse_radius(d, r, var, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(1, d, generator=g)
    m = GaussianMixture([1.0], mu, [var])
    n = torch.randn(d, generator=g)
    x = mu + r * n / n.norm()
    s, H = m.score_and_hessian(x)
    k = principal_curvatures_from_derivatives(s, H)
    torch.testing.assert_close(k, torch.full((1, d - 1), 1 / r), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mean_curvature_from_derivatives(s, H), torch.tensor([1 / r]), rtol=1e-9, atol=0)


@given(st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.floats(0.0, 2 * math.pi), st.floats(0.2, 2.0))
def test_curvature_of_ellipse_level_set(a, b, theta, level):
    """Level sets of N(0, diag(a^2, b^2)) are ellipses with semi-axes (level a, level b):
    kappa = A B / (A^2 sin^2 t + B^2 cos^2 t)^(3/2) at (A cos t, B sin t)."""
    m = GaussianMixture([1.0], [[0.0, 0.0]], [[a**2, b**2]])
    A, B = level * a, level * b
    x = torch.tensor([[A * math.cos(theta), B * math.sin(theta)]])
    s, H = m.score_and_hessian(x)
    ref = A * B / (A**2 * math.sin(theta) ** 2 + B**2 * math.cos(theta) ** 2) ** 1.5
    got = principal_curvatures_from_derivatives(s, H)
    assert got.shape == (1, 1) and abs(float(got) - ref) < 1e-9 * max(1, ref)


@given(mst.mixture_and_points(dims=st.integers(2, 10)))
def test_curvatures_sum_to_minus_p1_laplacian(case):
    m, x = case
    s, H = m.score_and_hessian(x)
    k = principal_curvatures_from_derivatives(s, H)
    assert bool((k[:, :-1] >= k[:, 1:]).all())  # descending
    ref = -p_laplacian_from_derivatives(s, H, 1)
    torch.testing.assert_close(k.sum(-1), ref, rtol=1e-8, atol=1e-8 * (1 + ref.abs().max()))


@given(st.integers(1, 16), st.floats(-10.0, 10.0).filter(lambda c: abs(c) > 1e-3))
def test_anisotropy_is_zero_for_isotropic_hessians(d, c):
    assert abs(float(anisotropy_index(c * torch.eye(d)))) < 1e-12


@given(st.integers(1, 16), st.integers(0, 10_000))
def test_anisotropy_range_and_eigenvalue_form(d, seed):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    l = torch.rand(d, generator=g) ** 3  # eigenvalues of -H, >= 0
    H = -(Q * l) @ Q.T
    A = float(anisotropy_index(H))
    ref = 1 - float(l.sum()) ** 2 / (d * float((l**2).sum()))
    assert abs(A - ref) < 1e-10
    assert -1e-12 <= A <= 1 - 1 / d + 1e-12
    # rank one: the maximum 1 - 1/d
    e = torch.zeros(d)
    e[0] = 1.0
    assert abs(float(anisotropy_index(-torch.outer(e, e))) - (1 - 1 / d)) < 1e-12


def test_alignment_cosines():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    ref = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=-1)
    torch.testing.assert_close(alignment_cosine(a, b), ref)
    loop = torch.tensor([
        sum(float(torch.dot(a[i, :, h, w], b[i, :, h, w]) / (a[i, :, h, w].norm() * b[i, :, h, w].norm()))
            for h in range(5) for w in range(6)) / 30
        for i in range(3)
    ])
    torch.testing.assert_close(alignment_cosine_per_position(a, b), loop)
    torch.testing.assert_close(alignment_cosine(a, 2.5 * a), torch.ones(3))
    assert torch.isnan(alignment_cosine(torch.zeros(1, 3), torch.ones(1, 3))).all()


@given(st.integers(1, 6), st.integers(0, 6), st.integers(0, 1000))
def test_flipd_of_rank_k_gaussian_tends_to_k(k, extra, seed):
    """Data on a k-dim subspace of R^d: p_sigma = N(0, diag(1 + s^2 (k), s^2 (d - k)))."""
    d = k + extra
    g = torch.Generator().manual_seed(seed)
    z = torch.zeros(1, d)
    z[0, :k] = torch.randn(k, generator=g)  # a data point on the subspace
    errs = []
    for sigma in (1e-1, 1e-2, 1e-3):
        var = torch.cat([torch.full((k,), 1 + sigma**2), torch.full((d - k,), sigma**2)])
        law = GaussianMixture([1.0], torch.zeros(1, d), var[None])
        s, H = law.score_and_hessian(z)
        lid = float(flipd_from_derivatives(s, H, sigma))
        bound = sigma**2 * (k + float((z**2).sum()))  # closed form: k - s^2 k/(1+s^2) + s^2 |z|^2/(1+s^2)^2
        assert abs(lid - k) <= bound + 1e-9
        errs.append(abs(lid - k))
    assert errs[-1] <= errs[0] + 1e-12


def test_values_at_a_critical_point_are_documented():
    s = torch.zeros(1, 3)
    H = -torch.eye(3)[None]
    assert torch.isnan(p_laplacian_from_derivatives(s, H, 1)).all()
    assert torch.isnan(p_laplacian_from_derivatives(s, H, 1.5)).all()
    assert float(p_laplacian_from_derivatives(s, H, 2)) == -3.0
    assert float(p_laplacian_from_derivatives(s, H, 3)) == 0.0
    assert torch.isnan(p_laplacian_from_derivatives(s, H, "inf")).all()
    assert torch.isnan(principal_curvatures_from_derivatives(s, H)).all()
    assert torch.isnan(anisotropy_index(torch.zeros(2, 2))).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: p_laplacian_from_derivatives(torch.ones(2, 3), torch.ones(2, 3, 2), 2), "hessian must have shape"),
        (lambda: p_laplacian_from_derivatives(torch.ones(1, 2), torch.ones(1, 2, 2), 0.5), "p must be >= 1"),
        (lambda: p_laplacian_from_derivatives(torch.ones(1, 2), torch.ones(1, 2, 2), "two"), "p must be a real number"),
        (lambda: p_laplacian_from_derivatives(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2, 2), 2), "score must be finite"),
        (lambda: flipd_from_derivatives(torch.ones(1, 2), torch.ones(1, 2, 2), 0.0), "sigma must be > 0"),
        (lambda: flipd_from_derivatives(torch.ones(1, 2), torch.ones(1, 2, 2), -1.0), "sigma must be > 0"),
        (lambda: principal_curvatures_from_derivatives(torch.ones(1, 1), torch.ones(1, 1, 1)), "d >= 2"),
        (lambda: alignment_cosine(torch.ones(2, 3), torch.ones(2, 4)), "same shape"),
        (lambda: anisotropy_index(torch.ones(2, 3)), r"\[\.\.\., d, d\]"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
