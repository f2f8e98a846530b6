"""Budget variants: each published signal read at a smaller cost is its base with the options it fixes, equal to the
full generation read over the same first steps, at the evaluations it then counts."""

import pytest
import torch

from memgeo.detect import SIGNALS
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sampling import GuidanceNormTracker, ddim_sample, initial_noise, trajectory_trackers


@pytest.fixture(scope="module")
def mix():
    return ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)


@pytest.mark.parametrize("k", [3, 8])
def test_the_guidance_norm_over_the_first_k_steps_is_the_full_traces_head(mix, k):
    x_T = initial_noise(mix, 4)
    full = ddim_sample(mix, 1, x_T, n_steps=20, trackers={"g": GuidanceNormTracker()}).trace["g"]
    r = SIGNALS[f"guidance_norm_k{k}"](mix, 1, x_T, n_steps=20)
    torch.testing.assert_close(r.score, full[:k].mean(0))
    assert r.n_evals == 2 * k
    assert SIGNALS["guidance_norm_k3"].settings is SIGNALS["guidance_norm"].settings
    assert SIGNALS["guidance_norm_k3"].extra == ()  # its base's flags set it


@pytest.mark.parametrize("k", [1, 3, 8])
def test_kappa_delta_over_the_first_k_steps_stops_the_sampler_there(mix, k):
    x_T = initial_noise(mix, 3)
    full = ddim_sample(mix, 1, x_T, n_steps=12,
                       trackers=trajectory_trackers(4, generator=torch.Generator().manual_seed(0))).trace["kappa_delta"]
    r = SIGNALS[f"kappa_delta_k{k}"](mix, 1, x_T, n_steps=12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.value, full[:k].mean(0))
    whole = SIGNALS["kappa_delta"](mix, 1, x_T, n_steps=12, generator=torch.Generator().manual_seed(0))
    assert r.n_evals * 12 == whole.n_evals * k  # the same per-step cost, k steps instead of 12


def test_a_budget_variant_fixes_its_options_in_every_call_path():
    spec = SIGNALS["bright_ending_10"]
    assert spec.options(n_steps=50)["n_steps"] == 10 and spec.base == "bright_ending"
    assert SIGNALS["kappa_delta_k3"].options(n_steps=50, n_directions=2)["track_steps"] == 3
    with pytest.raises(ValueError, match="budget variant"):
        type(spec)("x", spec.fn, "test", base="nope", budget=(("k", 1),))


def test_a_budget_variant_keeps_its_options_whatever_settings_or_keywords_are_given(mix):
    from memgeo.detect.gap_turn import GapTurnSettings
    from memgeo.detect.settings import KappaDeltaSettings

    x_T = initial_noise(mix, 2)
    r = SIGNALS["gap_turn_k3"](mix, 1, x_T, GapTurnSettings(), n_steps=12)
    assert r.n_evals == 8 and r.extras["cosines"].shape[0] == 3  # k = 3, not the settings' k = 1
    g = torch.Generator().manual_seed(0)
    kd = SIGNALS["kappa_delta_k3"](mix, 1, x_T, KappaDeltaSettings(), n_steps=12, generator=g, track_steps=12)
    whole = SIGNALS["kappa_delta"](mix, 1, x_T, n_steps=12, generator=torch.Generator().manual_seed(0))
    assert kd.n_evals * 12 == whole.n_evals * 3


def test_a_settings_object_reaches_a_function_that_takes_one_as_it_is(mix):
    """Its None fields are its own (memgeo's default probe time), not the preset's (the official t = 10)."""
    from memgeo.detect import p_laplace_flux
    from memgeo.detect.settings import PLaplaceSettings

    x_T = initial_noise(mix, 2)
    via_spec = SIGNALS["p_laplace"](mix, 1, x_T, PLaplaceSettings(n_directions=4), preset="official", n_steps=8,
                                    generator=torch.Generator().manual_seed(0))
    direct = p_laplace_flux(mix, 1, x_T, PLaplaceSettings(n_directions=4), n_steps=8,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(via_spec.score, direct.score)
    assert via_spec.extras["t"] == int(mix.timesteps(8)[-3])
