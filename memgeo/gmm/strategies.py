"""Public hypothesis strategies for well-conditioned Gaussian mixtures, points and noise levels.

Structural choices (dimension, number of components, covariance kind, seed) are drawn by
hypothesis so that failures shrink; numeric entries come from a seeded generator, which keeps
generation fast for ``d`` up to 16. Covariance eigenvalues lie in
``[min_eigenvalue, min_eigenvalue * max_condition]``, so every covariance has condition number
at most ``max_condition``.

Example::

    from hypothesis import given
    from memgeo.gmm import strategies as mst

    @given(mst.mixture_and_points())
    def test_something(case):
        mixture, x = case
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from .mixture import GaussianMixture

__all__ = ["mixtures", "points", "mixture_and_points", "noise_levels", "p_values"]

COVARIANCE_KINDS = ("isotropic", "diagonal", "full")


def _random_orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix


@st.composite
def mixtures(
    draw,
    *,
    dims=st.integers(1, 16),
    n_components=st.integers(1, 6),
    kinds=st.sampled_from(COVARIANCE_KINDS),
    min_eigenvalue: float = 0.2,
    max_condition: float = 10.0,
    spread: float = 2.0,
    min_weight: float = 0.05,
) -> GaussianMixture:
    """Well-conditioned float64 mixtures: d in 1..16, K in 1..6, condition number <= ``max_condition``."""
    d, K, kind = draw(dims), draw(n_components), draw(kinds)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    w = min_weight + torch.rand(K, generator=gen, dtype=torch.float64)
    w = w / w.sum()
    means = spread * torch.randn(K, d, generator=gen, dtype=torch.float64)
    lam = min_eigenvalue * max_condition ** torch.rand(K, d, generator=gen, dtype=torch.float64)  # in [m, m * cond]
    if kind == "isotropic":
        cov = lam[:, 0]
    elif kind == "diagonal":
        cov = lam
    else:
        U = torch.stack([_random_orthogonal(d, gen) for _ in range(K)])
        cov = torch.einsum("kde,ke,kfe->kdf", U, lam, U)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
    return GaussianMixture(w, means, cov)


@st.composite
def points(draw, mixture: GaussianMixture, *, n=st.integers(1, 4), where=st.sampled_from(("near", "sample", "far"))):
    """Points ``[n, d]`` near a mode (within 0.3), drawn from the mixture, or far (5-20 units) away."""
    k, how = draw(n), draw(where)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if how == "sample":
        return mixture.sample(k, generator=gen)
    comp = torch.randint(mixture.n_components, (k,), generator=gen)
    direction = torch.randn(k, mixture.dim, generator=gen, dtype=mixture.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    lo, hi = (0.01, 0.3) if how == "near" else (5.0, 20.0)
    radius = lo + (hi - lo) * torch.rand(k, 1, generator=gen, dtype=mixture.dtype)
    return mixture.means[comp] + radius * direction


@st.composite
def mixture_and_points(draw, **mixture_kwargs):
    """A pair ``(mixture, x)`` with ``x`` of shape ``[n, d]``."""
    m = draw(mixtures(**mixture_kwargs))
    return m, draw(points(m))


def noise_levels(min_value: float = 0.01, max_value: float = 2.0):
    """Noise levels sigma in ``[min_value, max_value]``."""
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)


def p_values():
    """Exponents of the p-Laplacian: 1, 2, a float in (1, 4], or infinity."""
    return st.one_of(st.sampled_from([1.0, 2.0, float("inf")]), st.floats(1.0, 4.0, allow_nan=False))
