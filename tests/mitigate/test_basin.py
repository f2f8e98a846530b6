"""Guidance outside the attraction basin: the exit is the gap norm's first strict local minimum (checked against a
brute-force scan), guidance is the preset's inside and the sampler's after, and nothing extra is evaluated."""

import numpy as np
import pytest
import torch

from memgeo.mitigate import BasinPolicy, basin_exit, generate
from memgeo.mitigate.presets import PRESETS
from memgeo.sampling import ddim_sample, initial_noise


def brute_force_exit(d):
    """The first j with d[j-2] > d[j-1] < d[j], by a plain loop; len(d) where there is none."""
    for j in range(2, len(d)):
        if d[j - 2] > d[j - 1] < d[j]:
            return j
    return len(d)


@pytest.mark.parametrize("seed", range(20))
def test_the_exit_is_the_first_strict_local_minimum(seed):
    rng = np.random.default_rng(seed)
    d = torch.tensor(np.round(rng.normal(size=(12, 5)), 1))  # rounded: ties occur and are no minimum
    expected = [brute_force_exit(d[:, s].tolist()) for s in range(5)]
    assert basin_exit(d).tolist() == expected
    assert basin_exit(d[:2]).tolist() == [2] * 5


def test_guidance_is_inside_until_the_exit_and_full_after(monkeypatch):
    from memgeo.gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)
    x_T = initial_noise(mix, 6)
    # a gap-norm trajectory with known minima, replayed through the policy
    norms = torch.tensor(np.random.default_rng(1).normal(size=(20, 6)) + 5.0)
    calls = iter(norms)
    monkeypatch.setattr("memgeo.mitigate.basin.sample_norm", lambda v: next(calls))
    policy = BasinPolicy(20, preset="official")
    res = ddim_sample(mix, 0, x_T, n_steps=20, guidance_scale=7.5, policy=policy)
    exit_step = basin_exit(norms)
    for i, act in enumerate(res.actions):
        w = act["guidance_scale"]
        torch.testing.assert_close(w, torch.where(exit_step <= i, 7.5, 1.0).to(w.dtype))
    assert res.n_evals == 40  # two evaluations per step, as plain guidance


def test_memgeo_forces_guidance_by_half_way_and_official_never(monkeypatch):
    from memgeo.gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)
    never = torch.arange(10, 0, -1, dtype=torch.float64)[:, None].repeat(1, 2)  # falls monotonically: no minimum
    assert basin_exit(never).tolist() == [10, 10]
    for preset, inside, full_from in (("memgeo", -2.0, 5), ("official", 1.0, 10)):
        calls = iter(never)
        monkeypatch.setattr("memgeo.mitigate.basin.sample_norm", lambda v: next(calls))
        res = ddim_sample(mix, 0, initial_noise(mix, 2), n_steps=10, guidance_scale=7.5,
                          policy=BasinPolicy(10, preset=preset))
        scales = [act["guidance_scale"].tolist() for act in res.actions]
        assert scales == [[inside] * 2] * full_from + [[7.5] * 2] * (10 - full_from)
    assert PRESETS["basin"]["official"] == {"inside": 1.0, "force_at": None}  # the released rule
    with pytest.raises(ValueError, match="force_at"):
        BasinPolicy(10, force_at=1.5)


def test_generate_basin_costs_what_plain_guidance_costs():
    from memgeo.gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)
    x_T = initial_noise(mix, 4)
    plain = generate(mix, 0, x_T, method="none", n_steps=12)
    basin = generate(mix, 0, x_T, method="basin", n_steps=12)
    assert basin.n_evals == plain.n_evals and len(basin.info["exit_step"]) == 4
    assert generate(mix, 0, x_T, method="basin", strength=7.5, n_steps=12).samples.allclose(plain.samples)
