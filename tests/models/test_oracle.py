"""The analytic-oracle UNet makes the whole adapter exact: scores, gaps, JVPs and signals equal
the conditional mixture's closed forms, for every prediction type."""


import pytest
import torch

from memgeo.detect import anisotropy, flipd_signal, guidance_norm, kappa_delta, p_laplace_flux, sharpness
from memgeo.geometry import alignment_cosine_per_position, jacobian
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.models.oracle import oracle_prompt, oracle_score_model
from memgeo.sampling import initial_noise

EVENT = (2, 2, 2)
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def mixture():
    return ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=3)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction", "sample"])
def oracle(request, mixture):
    return oracle_score_model(mixture, EVENT, request.param)


def flat(x):
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("t", [981, 501, 41, 1])
@pytest.mark.parametrize("c", [None, 0, 3])
def test_scores_and_pairs_equal_closed_forms(oracle, mixture, t, c):
    x = initial_noise(oracle, [0, 1, 2])
    torch.testing.assert_close(flat(oracle.score(x, t, oracle_prompt(c))), mixture.score(flat(x), t, c), **TOL)
    eu, ec = oracle.eps_pair(x, t, oracle_prompt(c))
    torch.testing.assert_close(flat(eu), mixture.eps(flat(x), t, None), **TOL)
    torch.testing.assert_close(flat(ec), mixture.eps(flat(x), t, c), **TOL)


def test_jacobian_through_adapter_is_the_hessian(oracle, mixture):
    x = initial_noise(oracle, [4, 5])
    for c in (1, 3):  # a memorized and a generalizing condition
        J = jacobian(lambda z: oracle.score(z, 261, oracle_prompt(c)), x)
        _, H = mixture.score_and_hessian(flat(x), 261, c)
        torch.testing.assert_close(J, H, rtol=1e-9, atol=1e-9 * float(H.abs().max()))


def test_signals_equal_closed_forms(oracle, mixture):
    x = initial_noise(oracle, [6, 7, 8])
    y = flat(x)
    for c in (0, 2):
        p = oracle_prompt(c)
        d = mixture.eps(y, 981, c) - mixture.eps(y, 981, None)
        torch.testing.assert_close(guidance_norm(oracle, p, x).value, d.norm(dim=-1), **TOL)

        eu41 = mixture.eps(y, 41, None)
        d41 = mixture.eps(y, 41, c) - eu41
        cos = alignment_cosine_per_position(d41.reshape(x.shape), eu41.reshape(x.shape))
        ref = d.norm(dim=-1) + 2.0 * cos
        torch.testing.assert_close(anisotropy(oracle, p, x, weights="sd1", norm="raw").value, ref, **TOL)

        # sharpness: |(H_c - H_u) s_delta| at t = 981, from closed-form Hessians
        s_c, H_c = mixture.score_and_hessian(y, 981, c)
        s_u, H_u = mixture.score_and_hessian(y, 981, None)
        ref = torch.einsum("bij,bj->bi", H_c - H_u, s_c - s_u).norm(dim=-1)
        torch.testing.assert_close(sharpness(oracle, p, x).value, ref, rtol=1e-8, atol=1e-10)


def test_generation_signals_equal_those_on_the_mixture(oracle, mixture):
    """The trajectory and post-generation signals give the same numbers on the oracle and the mixture."""
    x = initial_noise(oracle, [9, 10])
    y = flat(x)
    for fn, kw in ((kappa_delta, dict(n_directions=3)), (p_laplace_flux, dict(n_directions=4)), (flipd_signal, dict(n_probes=4, t=41))):
        a = fn(oracle, oracle_prompt(1), x, n_steps=10, generator=torch.Generator().manual_seed(0), **kw)
        b = fn(mixture, 1, y, n_steps=10, generator=torch.Generator().manual_seed(0), **kw)
        torch.testing.assert_close(a.value, b.value, rtol=1e-7, atol=1e-9)
        assert (a.n_evals, a.n_jvps) == (b.n_evals, b.n_jvps)


def test_official_presets_equal_closed_forms_in_the_model_parameterization(oracle, mixture):
    """Official presets work on the model's raw outputs: from the mixture's eps by the conventions' formulas."""
    from memgeo.guidance import from_eps

    x = initial_noise(oracle, [11, 12])
    y = flat(x)
    kind = oracle.prediction_type
    p = oracle_prompt(1)

    def raw(t, c):
        a, s = float(mixture.alpha(t)), float(mixture.sigma(t))
        return from_eps(mixture.eps(y, t, c), y, a, s, kind).reshape(x.shape)

    u_lo, c_lo = raw(41, None), raw(41, 1)
    cos = alignment_cosine_per_position(c_lo - u_lo, u_lo)
    d = (mixture.eps(y, 981, 1) - mixture.eps(y, 981, None)).norm(dim=-1)
    if kind == "v_prediction":
        norm, w = d / float(mixture.sigma(981)) ** 2, 0.1
    else:
        norm, w = d, 2.0
    got = anisotropy(oracle, p, x, preset="official")
    torch.testing.assert_close(got.value, norm + w * cos, **TOL)
    first = guidance_norm(oracle, p, x, steps="first", preset="official")
    torch.testing.assert_close(first.value, (raw(981, 1) - raw(981, None)).flatten(1).norm(dim=-1), **TOL)
