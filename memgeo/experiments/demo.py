"""The foundation demo: closed-form geometry of a few mixtures beside every estimator's value.

For each mixture and point it prints the exact value (closed form from the mixture's score and
Hessian) and, for every estimator, its value, standard error and cost (field evaluations, JVPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..geometry import (
    anisotropy_index,
    flipd,
    flipd_from_derivatives,
    hessian_eigenvalues,
    p_laplacian,
    p_laplacian_from_derivatives,
    principal_curvatures,
    principal_curvatures_from_derivatives,
)
from ..gmm import GaussianMixture

__all__ = ["DemoRow", "demo_mixtures", "foundation_demo", "format_rows"]


@dataclass
class DemoRow:
    mixture: str
    quantity: str
    method: str
    exact: float
    value: float
    stderr: float
    n_evals: int
    n_jvps: int


def demo_mixtures() -> dict[str, GaussianMixture]:
    """Three small mixtures: the SSVM triangle (d = 2), a full-covariance mixture (d = 8), a wide one (d = 64)."""
    h = 5 * math.sqrt(3) / 2
    triangle = GaussianMixture(
        torch.full((3,), 1 / 3), [[-2.5, -h / 3], [2.5, -h / 3], [0.0, 2 * h / 3]], torch.full((3,), 0.1)
    )
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 8, 8, generator=g, dtype=torch.float64)
    full = GaussianMixture([0.4, 0.6], torch.randn(2, 8, generator=g), A @ A.transpose(-1, -2) / 8 + 0.2 * torch.eye(8))
    wide = GaussianMixture(
        torch.full((4,), 0.25), 2 * torch.randn(4, 64, generator=g), 0.3 + torch.rand(4, 64, generator=g)
    )
    return {"triangle-d2": triangle, "full-d8": full, "diagonal-d64": wide}


def foundation_demo(*, n_probes: int = 256, seed: int = 0) -> list[DemoRow]:
    """Exact values beside estimates at one point per mixture (a noised sample, sigma = 0.5)."""
    rows: list[DemoRow] = []
    for name, mix in demo_mixtures().items():
        gen = torch.Generator().manual_seed(seed)
        law = mix.noised(1.0, 0.5)
        x = law.sample(1, generator=gen)
        s, H = law.score_and_hessian(x)
        d = mix.dim
        r = 0.05
        for p in (1.0, 2.0, 3.0, math.inf):
            exact = float(p_laplacian_from_derivatives(s, H, p)[0])
            methods = ["exact", "product"] if math.isinf(p) else ["exact", "product", "hutchinson", "flux_antithetic", "flux"]
            for method in methods:
                est = p_laplacian(law.score, x, p, method=method, n_probes=n_probes, radius=r, generator=gen)
                label = "Delta_inf (normalized)" if math.isinf(p) else f"Delta_{p:g} log p"
                rows.append(DemoRow(name, label, method, exact, float(est.value[0]), float(est.stderr[0]), est.n_evals, est.n_jvps))
        est = flipd(law.score, x, 0.5, method="hutchinson", n_probes=n_probes, generator=gen)
        rows.append(
            DemoRow(name, "FLIPD (sigma=0.5)", "hutchinson", float(flipd_from_derivatives(s, H, 0.5)[0]),
                    float(est.value[0]), float(est.stderr[0]), est.n_evals, est.n_jvps)
        )
        top = hessian_eigenvalues(law.score, x, 1, which="magnitude", n_iter=min(d, 20), generator=gen)
        exact_top = torch.linalg.eigvalsh(H)[0].abs().max()
        rows.append(DemoRow(name, "|top Hessian eigenvalue|", "lanczos", float(exact_top), float(top.values[0, 0].abs()), 0.0, 0, top.n_jvps))
        if d >= 2:
            kc = principal_curvatures(law.score, x, 1, n_iter=min(d - 1, 20), generator=gen)
            rows.append(DemoRow(name, "max principal curvature", "lanczos",
                                float(principal_curvatures_from_derivatives(s, H)[0, 0]), float(kc.values[0, 0]), 0.0, 1, kc.n_jvps))
        rows.append(DemoRow(name, "anisotropy index", "closed form", float(anisotropy_index(H)[0]), float(anisotropy_index(H)[0]), 0.0, 0, 0))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    head = f"{'mixture':<13} {'quantity':<26} {'method':<16} {'exact':>11} {'estimate':>11} {'stderr':>9} {'|z|':>6} {'evals':>6} {'JVPs':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        # |z| only where the standard error is above round-off (Rademacher probes are exact on diagonal Jacobians)
        z = abs(r.value - r.exact) / r.stderr if r.stderr > 1e-9 * max(1.0, abs(r.exact)) else float("nan")
        zs = f"{z:6.2f}" if math.isfinite(z) else "     -"
        lines.append(
            f"{r.mixture:<13} {r.quantity:<26} {r.method:<16} {r.exact:11.5g} {r.value:11.5g} {r.stderr:9.3g} {zs} {r.n_evals:6d} {r.n_jvps:5d}"
        )
    return "\n".join(lines)
