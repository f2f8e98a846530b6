"""Estimators on fields undefined at some points, or without autograd: NaN exactly there, or a clear refusal."""

import pytest
import torch


def nan_row_field(x):
    """-x, except NaN on the rows whose first coordinate exceeds 10."""
    return torch.where(x[:, :1] > 10, torch.full_like(x, float("nan")), -x)


@pytest.mark.parametrize("method, kw", [
    ("hutchinson", {}), ("hutchinson", {"derivative": "vjp"}), ("hutchinson_fd", {}), ("exact", {}),
    ("flux", {"radius": 0.5}), ("flux_antithetic", {"radius": 0.5}),
])
def test_a_field_undefined_at_a_point_gives_nan_there_and_only_there(method, kw):
    from memgeo.geometry import divergence

    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[1, 0] = 50.0
    est = divergence(nan_row_field, x, method=method, n_probes=8, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.isnan(est.value[1]) and torch.isfinite(est.value[[0, 2]]).all()
    if method == "flux":  # one-sided spherical probes of -x: unbiased, within its own standard error
        assert abs(float(est.value[0]) + 4.0) <= 4 * float(est.stderr[0])
    else:
        assert est.value[0] == pytest.approx(-4.0, abs=1e-6)


@pytest.mark.parametrize("call", ["hutchinson", "vjp", "exact", "product", "lanczos"])
def test_jvp_and_vjp_methods_refuse_a_field_without_autograd(call):
    from memgeo.geometry import divergence, hessian_eigenvalues, p_laplacian

    detached = lambda x: (-2.0 * x).detach()  # noqa: E731
    x = torch.randn(2, 3, dtype=torch.float64)
    run = {
        "hutchinson": lambda: divergence(detached, x, method="hutchinson"),
        "vjp": lambda: divergence(detached, x, method="hutchinson", derivative="vjp"),
        "exact": lambda: divergence(detached, x, method="exact"),
        "product": lambda: p_laplacian(detached, x, 3, method="product"),
        "lanczos": lambda: hessian_eigenvalues(detached, x, k=2),
    }[call]
    with pytest.raises(ValueError, match="does not depend on x through autograd"):
        run()

