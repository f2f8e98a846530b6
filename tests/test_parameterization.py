"""Parameterization adapters: definitions and round trips (docs/conventions.md, section 2)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from memgeo.guidance import from_eps
from memgeo.parameterization import PREDICTION_TYPES, eps_to_score, eps_to_x0, score_to_eps, to_eps, to_x0

vp = st.floats(0.01, 0.999).map(lambda a: (a, (1 - a * a) ** 0.5))  # alpha^2 + sigma^2 = 1
general = st.tuples(st.floats(0.05, 3.0), st.floats(0.05, 3.0))


@given(st.one_of(vp, general), st.integers(0, 1000))
def test_definitions_recover_eps(coefs, seed):
    alpha, sigma = coefs
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    x = alpha * x0 + sigma * eps
    v = alpha * eps - sigma * x0  # the v-parameterization's definition
    torch.testing.assert_close(to_eps(v, x, alpha, sigma, "v_prediction"), eps)
    torch.testing.assert_close(to_eps(x0, x, alpha, sigma, "sample"), eps)
    torch.testing.assert_close(to_eps(eps, x, alpha, sigma, "epsilon"), eps)
    torch.testing.assert_close(eps_to_x0(eps, x, alpha, sigma), x0)
    flow = eps - x0  # the rectified-flow velocity's definition (any alpha, sigma > 0)
    torch.testing.assert_close(to_eps(flow, x, alpha, sigma, "flow"), eps)
    for kind, pred in (("v_prediction", v), ("sample", x0), ("epsilon", eps), ("flow", flow)):
        torch.testing.assert_close(from_eps(eps, x, alpha, sigma, kind), pred)
        torch.testing.assert_close(to_x0(pred, x, alpha, sigma, kind), x0)


@given(vp, st.integers(0, 1000))
def test_sample_parameterization_score(coefs, seed):
    alpha, sigma = coefs
    g = torch.Generator().manual_seed(seed)
    x, x0 = torch.randn(5, generator=g), torch.randn(5, generator=g)
    eps = to_eps(x0, x, alpha, sigma, "sample")
    torch.testing.assert_close(eps_to_score(eps, sigma), (alpha * x0 - x) / sigma**2)
    torch.testing.assert_close(score_to_eps(eps_to_score(eps, sigma), sigma), eps)


def test_v_prediction_matches_diffusers_ddim():
    """diffusers' DDIM step recovers eps from v as sqrt(abar) v + sqrt(1 - abar) x."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(50)
    t = int(sched.timesteps[10])
    abar = sched.alphas_cumprod[t].double()
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64), torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64)
    out = sched.step(v.float(), t, x.float(), eta=0.0)
    eps = to_eps(v, x, abar.sqrt(), (1 - abar).sqrt(), "v_prediction")
    x0 = eps_to_x0(eps, x, abar.sqrt(), (1 - abar).sqrt())
    torch.testing.assert_close(out.pred_original_sample.double(), x0, rtol=1e-5, atol=1e-5)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        to_eps(torch.zeros(1), torch.zeros(1), 1.0, 1.0, "rectified")
    assert set(PREDICTION_TYPES) == {"epsilon", "v_prediction", "sample", "flow"}
