"""Closed forms against sympy: score, Hessian, Laplacian and p-Laplacian of small mixtures (d = 2).

sympy differentiates the symbolic log-density directly - including the divergence of
|grad u|^(p-2) grad u - so the oracle shares nothing with memgeo's formulas.
"""

import mpmath
import pytest
import sympy as sp
import torch

from memgeo.geometry import p_laplacian_from_derivatives
from memgeo.gmm import GaussianMixture

X, Y = sp.symbols("x y", real=True)

CASES = {
    "K2-full": (
        [sp.Rational(2, 5), sp.Rational(3, 5)],
        [[0, 0], [sp.Rational(3, 2), -1]],
        [[[1, sp.Rational(1, 3)], [sp.Rational(1, 3), sp.Rational(1, 2)]], [[sp.Rational(3, 4), 0], [0, 2]]],
    ),
    "K3-mixed": (
        [sp.Rational(1, 2), sp.Rational(1, 4), sp.Rational(1, 4)],
        [[-1, 1], [1, 1], [0, -1]],
        [[[sp.Rational(1, 2), 0], [0, sp.Rational(1, 2)]], [[1, -sp.Rational(1, 2)], [-sp.Rational(1, 2), 1]], [[sp.Rational(1, 5), 0], [0, 1]]],
    ),
}
POINTS = [(0.3, -0.2), (1.1, 0.7), (-0.8, -1.3)]


def _symbolic(weights, means, covs):
    v = sp.Matrix([X, Y])
    dens = 0
    for w, mu, S in zip(weights, means, covs):
        S = sp.Matrix(S)
        diff = v - sp.Matrix(mu)
        dens += w * sp.exp(-(diff.T * S.inv() * diff)[0] / 2) / (2 * sp.pi * sp.sqrt(S.det()))
    u = sp.log(dens)
    grad = [sp.diff(u, X), sp.diff(u, Y)]
    return u, grad


@pytest.mark.parametrize("case", list(CASES))
def test_closed_forms_match_sympy(case):
    weights, means, covs = CASES[case]
    u, grad = _symbolic(weights, means, covs)
    hess = [[sp.diff(g, z) for z in (X, Y)] for g in grad]
    m = GaussianMixture([float(w) for w in weights], [[float(a) for a in mu] for mu in means],
                        [[[float(a) for a in row] for row in S] for S in covs])
    pts = torch.tensor(POINTS)
    s, H = m.score_and_hessian(pts)
    norm2 = grad[0] ** 2 + grad[1] ** 2
    exprs = {"u": u, **{f"s{a}": grad[a] for a in range(2)}, **{f"H{a}{b}": hess[a][b] for a in range(2) for b in range(2)}}
    exponents = (sp.Integer(2), sp.Integer(1), sp.Rational(3, 2), sp.Integer(3))
    for p in exponents:  # Delta_p u = div(|grad u|^(p-2) grad u), differentiated symbolically
        G = [norm2 ** ((p - 2) / 2) * g for g in grad]
        exprs[f"lap{p}"] = sp.diff(G[0], X) + sp.diff(G[1], Y)
    fns = {k: sp.lambdify((X, Y), e, modules="mpmath") for k, e in exprs.items()}
    with mpmath.workdps(30):  # 30 significant digits: the oracle's own error is negligible
        for i, (px, py) in enumerate(POINTS):
            ref = {k: float(f(mpmath.mpf(px), mpmath.mpf(py))) for k, f in fns.items()}
            assert abs(ref["u"] - float(m.log_prob(pts[i]))) < 1e-10
            for a in range(2):
                assert abs(ref[f"s{a}"] - float(s[i, a])) < 1e-10
                for b in range(2):
                    assert abs(ref[f"H{a}{b}"] - float(H[i, a, b])) < 1e-10
            for p in exponents:
                want = ref[f"lap{p}"]
                got = float(p_laplacian_from_derivatives(s[i], H[i], float(p)))
                assert abs(got - want) < 1e-10 * max(1.0, abs(want)), (case, i, p, got, want)
