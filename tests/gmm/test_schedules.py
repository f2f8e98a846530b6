"""Noise schedules against diffusers' schedulers (the convention Stable Diffusion uses)."""

import pytest
import torch

from memgeo.gmm import ddim_timesteps, linear_schedule, scaled_linear_schedule, ve_schedule


@pytest.fixture(scope="module")
def ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        clip_sample=False, set_alpha_to_one=False, timestep_spacing="leading",
    )


def test_scaled_linear_matches_diffusers(ddim):
    s = scaled_linear_schedule()
    torch.testing.assert_close(s.alphas_cumprod, ddim.alphas_cumprod.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s.alpha(981) ** 2 + s.sigma(981) ** 2, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("n_steps", [1, 10, 25, 50, 100])
def test_ddim_leading_timesteps_match_diffusers(ddim, n_steps):
    ddim.set_timesteps(n_steps)
    assert scaled_linear_schedule().timesteps(n_steps).tolist() == ddim.timesteps.tolist()


def test_fifty_steps_are_981_to_1():
    ts = ddim_timesteps(50)
    assert ts[0] == 981 and ts[-1] == 1 and ts[-3] == 41 and len(ts) == 50


def test_linear_matches_diffusers():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    torch.testing.assert_close(linear_schedule().alphas_cumprod, ref, rtol=1e-6, atol=1e-7)


def test_ve_schedule():
    s = ve_schedule(0.01, 50.0, 100)
    assert torch.all(s.alphas == 1) and abs(float(s.sigma(0)) - 0.01) < 1e-12 and abs(float(s.sigma(99)) - 50) < 1e-9
    assert torch.all(s.sigmas[1:] > s.sigmas[:-1])


def test_bad_timesteps_raise():
    s = scaled_linear_schedule()
    with pytest.raises(ValueError, match="t must lie in"):
        s.sigma(1000)
    with pytest.raises(ValueError, match="integer timesteps"):
        s.alpha(1.5)
    with pytest.raises(ValueError, match="n_steps"):
        ddim_timesteps(0)
