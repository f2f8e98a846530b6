"""Field-only estimators against closed forms: exactness, standard errors, coverage, rates, costs."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from memgeo.geometry import (
    direction_flux,
    divergence,
    flipd,
    flipd_from_derivatives,
    jacobian,
    p_laplacian,
    p_laplacian_from_derivatives,
)
from memgeo.gmm import GaussianMixture
from memgeo.gmm import strategies as mst

finite_p = st.sampled_from([1.0, 1.5, 2.0, 3.0])


def _slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(7)
    d = 8
    A = torch.randn(3, d, d, generator=g)
    return GaussianMixture([0.2, 0.3, 0.5], 1.5 * torch.randn(3, d, generator=g), A @ A.transpose(-1, -2) / d + 0.3 * torch.eye(d))


@given(mst.mixture_and_points(), finite_p)
def test_exact_trace_estimators_equal_exact_formulas(case, p):
    m, x = case
    s, H = m.score_and_hessian(x)
    ref = p_laplacian_from_derivatives(s, H, p)
    tol = dict(rtol=1e-8, atol=1e-8 * (1 + float(ref.abs().max())))
    torch.testing.assert_close(p_laplacian(m.score, x, p, method="exact").value, ref, **tol)
    torch.testing.assert_close(p_laplacian(m.score, x, p, method="product", trace_method="exact").value, ref, **tol)
    for derivative in ("jvp", "vjp"):
        est = divergence(m.score, x, method="exact", derivative=derivative)
        torch.testing.assert_close(est.value, torch.diagonal(H, dim1=-2, dim2=-1).sum(-1), **tol)
    torch.testing.assert_close(jacobian(m.score, x), H, rtol=1e-9, atol=1e-9 * (1 + float(H.abs().max())))


# Flux radii and finite-difference steps ("auto") are 1e-4 times the distance |s| / ||H|| to the nearest critical point, where
# |s|^(p-2) s is singular for p < 2: in d = 1 the sphere is two points and the antithetic stderr is
# zero, so the O(r^2) bias must fall below round-off for a 4-SE test to hold.
STOCHASTIC = [
    dict(method="hutchinson", probe="rademacher"),
    dict(method="hutchinson", probe="gaussian"),
    dict(method="hutchinson", probe="sphere", derivative="vjp"),
    dict(method="hutchinson_fd", h="auto"),
    dict(method="flux", radius="auto"),
    dict(method="flux_antithetic", radius="auto"),
    dict(method="product", trace_method="hutchinson"),
    dict(method="product", trace_method="flux_antithetic", radius="auto", h="auto", derivative="fd"),
]


@pytest.mark.parametrize("kwargs", STOCHASTIC, ids=lambda k: "-".join(str(v) for v in k.values()))
@given(case=mst.mixture_and_points(), p=finite_p, seed=st.integers(0, 2**31 - 1))
def test_stochastic_estimates_within_four_standard_errors(kwargs, case, p, seed):
    m, x = case
    s, H = m.score_and_hessian(x)
    truth = p_laplacian_from_derivatives(s, H, p)
    dist = float((s.norm(dim=-1) / torch.linalg.matrix_norm(H, ord=2)).min())
    kwargs = {k: (1e-4 * min(1.0, dist) if v == "auto" else v) for k, v in kwargs.items()}  # radius, h
    # 1024 probes: the per-probe terms are skewed, and the 4-SE bound leans on their mean being ~normal
    est = p_laplacian(m.score, x, p, n_probes=1024, generator=torch.Generator().manual_seed(seed), **kwargs)
    roundoff = 1e-7 * (1 + truth.abs())  # Rademacher probes are exact on diagonal Jacobians (stderr 0)
    assert bool(((est.value - truth).abs() <= 4 * est.stderr + roundoff).all()), (est.value, truth, est.stderr)


@pytest.mark.parametrize("method", ["hutchinson", "flux_antithetic", "flux"])
def test_confidence_intervals_cover_at_nominal_rate(mixture, method):
    """2000 independent estimates (one per replicated row): 95% intervals cover the truth ~95% of the time."""
    R, n = 2000, 100
    x = mixture.noised(1.0, 0.3).sample(1, generator=torch.Generator().manual_seed(0))
    law = mixture.noised(1.0, 0.3)
    truth = float(law.laplacian(x))
    est = divergence(law.score, x.expand(R, -1), method=method, n_probes=n, radius=1e-3,
                     generator=torch.Generator().manual_seed(1))
    lo, hi = est.interval(0.95)
    coverage = float(((lo <= truth) & (truth <= hi)).double().mean())
    # binomial sd at R = 2000 is 0.005; the t(99) vs normal gap costs ~0.003 and skewed terms a little more
    assert 0.925 <= coverage <= 0.97, coverage


def test_hutchinson_error_falls_like_inverse_sqrt_probes(mixture):
    law = mixture.noised(1.0, 0.3)
    x = law.sample(1, generator=torch.Generator().manual_seed(2))
    truth = float(law.laplacian(x))
    ns = [8, 32, 128, 512]
    rmse = []
    for n in ns:
        est = divergence(law.score, x.expand(1000, -1), method="hutchinson", n_probes=n, probe="gaussian",
                         generator=torch.Generator().manual_seed(n))
        rmse.append(float(((est.value - truth) ** 2).mean().sqrt()))
    assert abs(_slope(ns, rmse) + 0.5) < 0.08, rmse


def test_central_difference_bias_falls_like_h_squared(mixture):
    law = mixture.noised(1.0, 0.3)
    x = law.sample(2, generator=torch.Generator().manual_seed(3))
    ref = divergence(law.score, x, method="hutchinson", n_probes=16, generator=torch.Generator().manual_seed(0))
    hs = [0.2, 0.1, 0.05, 0.025]
    bias = []
    for h in hs:  # same probes (same seed): the difference is the finite-difference bias alone
        fd = divergence(law.score, x, method="hutchinson_fd", h=h, n_probes=16, generator=torch.Generator().manual_seed(0))
        bias.append(float((fd.value - ref.value).abs().max()))
    assert abs(_slope(hs, bias) - 2.0) < 0.15, bias


def test_antithetic_flux_bias_falls_like_r_squared(mixture):
    law = mixture.noised(1.0, 0.3)
    x = law.sample(2, generator=torch.Generator().manual_seed(4))
    ref = divergence(law.score, x, method="hutchinson", probe="sphere", n_probes=16, generator=torch.Generator().manual_seed(0))
    rs = [0.2, 0.1, 0.05, 0.025]
    bias = []
    for r in rs:  # the same spherical directions: flux - d n^T J n is the O(r^2) bias
        fl = divergence(law.score, x, method="flux_antithetic", radius=r, n_probes=16, generator=torch.Generator().manual_seed(0))
        bias.append(float((fl.value - ref.value).abs().max()))
    assert abs(_slope(rs, bias) - 2.0) < 0.15, bias


def test_plain_flux_is_unbiased_for_linear_fields():
    """For F = A x + b the divergence theorem is exact on any sphere: flux mean = tr A at every radius."""
    g = torch.Generator().manual_seed(5)
    A, b = torch.randn(6, 6, generator=g), torch.randn(6, generator=g)
    x = torch.randn(1, 6, generator=g).expand(4000, -1)
    for r in (0.1, 10.0):
        est = divergence(lambda z: z @ A.T + b, x, method="flux", radius=r, n_probes=8, generator=g)
        mean, se = est.value.mean(), est.value.std() / math.sqrt(4000)
        assert abs(float(mean - A.trace())) < 4 * float(se)


class Counting:
    """A field wrapper that counts the rows it is evaluated on (plain, JVP and VJP passes alike)."""

    def __init__(self, field):
        self.field, self.rows = field, 0

    def __call__(self, x):
        self.rows += x.shape[0]
        return self.field(x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="exact"),
        dict(method="product"),
        dict(method="product", derivative="vjp"),
        dict(method="product", derivative="fd", trace_method="hutchinson_fd"),
        dict(method="hutchinson"),
        dict(method="hutchinson_fd"),
        dict(method="flux", radius=0.1),
        dict(method="flux_antithetic", radius=0.1),
    ],
    ids=lambda k: "-".join(str(v) for v in k.values()),
)
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_reported_costs_match_counted_evaluations(mixture, kwargs, p):
    B = 3
    x = mixture.sample(B, generator=torch.Generator().manual_seed(0))
    f = Counting(mixture.score)
    est = p_laplacian(f, x, p, n_probes=10, chunk_size=4, **kwargs)
    assert f.rows == B * (est.n_evals + est.n_jvps + est.n_vjps)


def test_event_shaped_fields_match_flat(mixture):
    """A field over [B, 2, 4] gives the same estimates as the same field over [B, 8]."""
    x = mixture.sample(3, generator=torch.Generator().manual_seed(1))
    shaped = lambda z: mixture.score(z.reshape(-1, 8)).reshape(z.shape)  # noqa: E731
    for kwargs in (dict(method="exact"), dict(method="product"), dict(method="flux_antithetic", radius=0.01)):
        a = p_laplacian(mixture.score, x, 1.5, generator=torch.Generator().manual_seed(0), **kwargs)
        b = p_laplacian(shaped, x.reshape(3, 2, 4), 1.5, generator=torch.Generator().manual_seed(0), **kwargs)
        torch.testing.assert_close(a.value, b.value)


def test_direction_flux_is_the_p1_flux_and_ignores_magnitude(mixture):
    x = mixture.sample(2, generator=torch.Generator().manual_seed(2))
    a = direction_flux(mixture.score, x, radius=0.5, n_directions=64, generator=torch.Generator().manual_seed(0))
    b = p_laplacian(mixture.score, x, 1, method="flux", radius=0.5, n_probes=64, generator=torch.Generator().manual_seed(0))
    c = direction_flux(lambda z: 37.0 * mixture.score(z), x, radius=0.5, n_directions=64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.value, b.value)
    torch.testing.assert_close(a.value, c.value)


@given(mst.mixture_and_points(), mst.noise_levels(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_flipd_estimator(case, sigma, seed):
    m, x = case
    law = m.noised(1.0, sigma)
    s, H = law.score_and_hessian(x)
    truth = flipd_from_derivatives(s, H, sigma)
    torch.testing.assert_close(flipd(law.score, x, sigma, method="exact").value, truth, rtol=1e-8, atol=1e-8 * (1 + float(truth.abs().max())))
    est = flipd(law.score, x, sigma, n_probes=128, generator=torch.Generator().manual_seed(seed))
    assert bool(((est.value - truth).abs() <= 4 * est.stderr + 1e-7 * (1 + truth.abs())).all())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x: divergence(m.score, x, method="magic"), "method must be one of"),
        (lambda m, x: divergence(m.score, x, method="flux"), "radius is required"),
        (lambda m, x: divergence(m.score, x, method="flux", radius=-1.0), "radius must be > 0"),
        (lambda m, x: divergence(m.score, x, n_probes=1), "n_probes must be an integer >= 2"),
        (lambda m, x: divergence(m.score, x, probe="uniform"), "probe must be one of"),
        (lambda m, x: divergence(m.score, x, method="hutchinson_fd", h=0.0), "h must be > 0"),
        (lambda m, x: divergence(lambda z: z[:, :2], x), "field must return a tensor of its input's shape"),
        (lambda m, x: divergence("score", x), "field must be a callable"),
        (lambda m, x: divergence(m.score, x[0]), "x must have at least 2 dimension"),
        (lambda m, x: divergence(m.score, x * float("nan")), "x must be finite"),
        (lambda m, x: p_laplacian(m.score, x, 0.9), "p must be >= 1"),
        (lambda m, x: p_laplacian(m.score, x, "inf", method="hutchinson"), "p = inf has no divergence form"),
        (lambda m, x: flipd(m.score, x, 0.0), "sigma must be > 0"),
    ],
)
def test_bad_input_raises(mixture, call, match):
    x = mixture.sample(2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        call(mixture, x)


def test_zero_field_with_p_below_two_is_nan():
    x = torch.zeros(1, 3)
    field = lambda z: -z  # noqa: E731  score of N(0, I): zero at the mode
    assert torch.isnan(p_laplacian(field, x, 1, method="exact").value).all()
    assert torch.isnan(p_laplacian(field, x, 1, method="product").value).all()
    assert float(p_laplacian(field, x, 2, method="exact").value) == -3.0
    assert float(p_laplacian(field, x, 3, method="product", trace_method="exact").value) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [dict(method="product"), dict(method="hutchinson_fd"), dict(method="hutchinson", probe="sphere")],
    ids=lambda k: "-".join(str(v) for v in k.values()),
)
@pytest.mark.parametrize("p", [1.0, 3.0])
def test_p_laplacian_intervals_cover_at_nominal_rate(mixture, kwargs, p):
    """10000 replicas: coverage of 95% intervals within ~3 binomial sd (0.0022) plus the t(99) gap."""
    R = 10000
    law = mixture.noised(1.0, 0.3)
    x = law.sample(1, generator=torch.Generator().manual_seed(8))
    s, H = law.score_and_hessian(x)
    truth = float(p_laplacian_from_derivatives(s, H, p))
    est = p_laplacian(law.score, x.expand(R, -1), p, n_probes=100, generator=torch.Generator().manual_seed(9), **kwargs)
    lo, hi = est.interval(0.95)
    coverage = float(((lo <= truth) & (truth <= hi)).double().mean())
    assert 0.935 <= coverage <= 0.96, coverage
