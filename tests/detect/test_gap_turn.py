"""The gap turn (memgeo's detector at 4 evaluations) against a brute-force reference on the mixture: the guidance
gaps at x_T and after one guided DDIM step computed by hand from the closed-form eps."""

import math

import pytest
import torch

from memgeo.detect import SIGNALS
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sampling import initial_noise


@pytest.fixture(scope="module")
def mix():
    return ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=2, n_generalizing=2, seed=0)


def brute_force(mix, cond, x_T, *, n_steps, w, k):
    """The k turns by hand: DDIM (eta 0) steps with classifier-free guidance, the gap read at each step."""
    ts = [int(t) for t in mix.timesteps(n_steps)]
    x, gaps = x_T, []
    for i in range(k + 1):
        t = ts[i]
        eu, ec = mix.eps(x, t, None), mix.eps(x, t, cond)
        gaps.append((ec - eu).flatten(1))
        eps = eu + w * (ec - eu)
        a, s = float(mix.alpha(t)), float(mix.sigma(t))
        x0 = (x - s * eps) / a
        t_prev = ts[i + 1] if i + 1 < len(ts) else None
        a_prev, s_prev = (float(mix.alpha(t_prev)), float(mix.sigma(t_prev))) if t_prev is not None else (1.0, 0.0)
        x = a_prev * x0 + s_prev * eps
    turns = []
    for g0, g1 in zip(gaps[:-1], gaps[1:]):
        cos = (g0 * g1).sum(1) / (g0.norm(dim=1) * g1.norm(dim=1))
        turns.append(g0.norm(dim=1) * (1 - cos))
    return torch.stack(turns).mean(0)


@pytest.mark.parametrize("name,k", [("gap_turn", 1), ("gap_turn_k3", 3)])
def test_the_gap_turn_is_the_hand_computed_turn(mix, name, k):
    x_T = initial_noise(mix, 5)
    r = SIGNALS[name](mix, 1, x_T, n_steps=20, guidance_scale=7.5)
    torch.testing.assert_close(r.score, brute_force(mix, 1, x_T, n_steps=20, w=7.5, k=k).to(r.score.dtype),
                               rtol=1e-5, atol=1e-8)
    assert r.n_evals == 2 * (k + 1)  # computed by the sampler, never typed
    assert SIGNALS[name].own and r.extras["cosines"].shape == (k, 5)


def test_a_gap_that_keeps_its_direction_does_not_turn():
    """A condition whose gap is one constant vector (a shift of the mean) has cosine 1 and turn 0 at every step."""
    class Shifted:
        event_shape = (3,)
        schedule = None

        def __init__(self, mix):
            self.mix = mix
            self.__dict__.update({k: getattr(mix, k) for k in ("alpha", "sigma", "timesteps")})

        def eps(self, x, t, cond=None):
            e = self.mix.eps(x, t, None)
            return e if cond is None else e + torch.tensor([0.3, -0.2, 0.1], dtype=x.dtype)

        def eps_pair(self, x, t, cond):
            return self.eps(x, t, None), self.eps(x, t, cond)

    base = ConditionalGaussianMixture.memorization_scenario(dim=3, n_memorized=1, n_generalizing=1, seed=0)
    x_T = initial_noise(base, 4)
    r = SIGNALS["gap_turn"](Shifted(base), 0, x_T, n_steps=10)
    assert torch.allclose(r.score, torch.zeros(4, dtype=r.score.dtype), atol=1e-6)
    assert torch.allclose(r.extras["norms"], torch.full_like(r.extras["norms"], math.sqrt(0.14)))


def test_a_run_shorter_than_k_turns_reads_every_turn_it_has(mix):
    x_T = initial_noise(mix, 2)
    short = SIGNALS["gap_turn_k3"](mix, 1, x_T, n_steps=3)
    torch.testing.assert_close(short.score, brute_force(mix, 1, x_T, n_steps=3, w=7.5, k=2).to(short.score.dtype),
                               rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="n_steps >= 2"):
        SIGNALS["gap_turn"](mix, 1, x_T, n_steps=1)
