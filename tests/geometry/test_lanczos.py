"""Lanczos on Jacobian-vector products against dense eigendecompositions."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from memgeo.geometry import hessian_eigenvalues, principal_curvatures, principal_curvatures_from_derivatives
from memgeo.gmm import GaussianMixture
from memgeo.gmm import strategies as mst


@given(mst.mixture_and_points(dims=st.integers(2, 12)), st.integers(0, 1000))
def test_full_krylov_space_gives_exact_spectrum(case, seed):
    m, x = case
    s, H = m.score_and_hessian(x)
    d = m.dim
    g = torch.Generator().manual_seed(seed)
    ev = hessian_eigenvalues(m.score, x, d, n_iter=d, generator=g)
    scale = 1 + float(H.abs().max())
    torch.testing.assert_close(ev.values, torch.linalg.eigvalsh(H).flip(-1), rtol=1e-8, atol=1e-8 * scale)
    kc = principal_curvatures(m.score, x, d - 1, n_iter=d - 1, generator=g)
    ref = principal_curvatures_from_derivatives(s, H)
    torch.testing.assert_close(kc.values, ref, rtol=1e-7, atol=1e-7 * (1 + float(ref.abs().max())))
    assert (ev.n_jvps, kc.n_jvps, kc.n_evals) == (d, d - 1, 1)


def test_top_eigenvalues_in_high_dimension_without_dense_matrices():
    """d = 400 Gaussian whose covariance has three small, well separated eigenvalues: 30 JVPs suffice."""
    d = 400
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    lam = 0.5 + 0.5 * torch.rand(d, generator=g)
    lam[:3] = torch.tensor([0.01, 0.02, 0.04])
    m = GaussianMixture([1.0], torch.zeros(1, d), ((Q * lam) @ Q.T)[None])
    x = m.sample(2, generator=g)
    ev = hessian_eigenvalues(m.score, x, 3, n_iter=30, which="smallest", generator=g)
    torch.testing.assert_close(ev.values, torch.tensor([[-100.0, -50.0, -25.0]] * 2), rtol=1e-8, atol=1e-8)
    mag = hessian_eigenvalues(m.score, x, 1, n_iter=30, which="magnitude", generator=g)
    torch.testing.assert_close(mag.values, torch.tensor([[-100.0]] * 2), rtol=1e-8, atol=1e-8)


def test_symmetrized_operator_for_non_symmetric_jacobians():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(6, 6, generator=g)
    x = torch.randn(2, 6, generator=g)
    ev = hessian_eigenvalues(lambda z: z @ A.T, x, 6, n_iter=6, symmetrize=True, generator=g)
    torch.testing.assert_close(ev.values[0], torch.linalg.eigvalsh(0.5 * (A + A.T)).flip(0))
    assert (ev.n_jvps, ev.n_vjps) == (6, 6)


def test_lanczos_bad_input():
    m = GaussianMixture([1.0], torch.zeros(1, 3), [1.0])
    x = torch.ones(1, 3)
    with pytest.raises(ValueError, match="k must be <= d"):
        hessian_eigenvalues(m.score, x, 4)
    with pytest.raises(ValueError, match="n_iter must lie in"):
        hessian_eigenvalues(m.score, x, 2, n_iter=1)
    with pytest.raises(ValueError, match="which must be one of"):
        hessian_eigenvalues(m.score, x, 1, which="top")
    with pytest.raises(ValueError, match="undefined where the field vanishes"):
        principal_curvatures(m.score, torch.zeros(1, 3), 1)
