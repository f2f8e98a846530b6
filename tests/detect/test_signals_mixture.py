"""Signals on the canonical memorization mixture: separation, costs, sampler, trackers."""

import math

import pytest
import torch

from memgeo.detect import SIGNALS, auroc, flipd_t0
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.guidance import combined_score
from memgeo.sampling import GuidanceNormTracker, KappaDeltaTracker, ddim_sample, initial_noise


@pytest.fixture(scope="module")
def scenario():
    return ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=10, n_generalizing=10, seed=0)


def _hanley_mcneil_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC (Hanley & McNeil 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg))


@pytest.mark.parametrize("name", ["guidance_norm", "anisotropy"])
def test_norm_and_anisotropy_separate_memorized_conditions(scenario, name):
    x_T = initial_noise(scenario, 16)
    scores, labels = [], []
    for c in range(scenario.n_conditions):
        scores.append(SIGNALS[name](scenario, c, x_T).score)
        labels += [int(scenario.memorized[c])] * 16
    a = auroc(labels, torch.cat(scores).numpy())
    se = _hanley_mcneil_se(a, 160, 160)
    assert a - 3 * se > 0.5, (a, se)  # separation beyond three of its own standard errors


class CountingModel:
    """Counts rows evaluated by a score model (a JVP pass counts as one)."""

    def __init__(self, model):
        self.model, self.rows = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def eps(self, x, t, cond=None):
        self.rows += x.shape[0]
        return self.model.eps(x, t, cond)


@pytest.mark.parametrize("name", [n for n, s in SIGNALS.items() if not s.cross_attention])
def test_reported_evaluations_match_counted(scenario, name):
    S = 3
    m = CountingModel(scenario)
    kw = {} if not SIGNALS[name].generates else {"n_steps": 6, "generator": torch.Generator().manual_seed(0)}
    if name == "flipd":  # its probe time is chosen once per model (cached), outside the per-sample cost
        flipd_t0(m, [12], n_steps=6, guidance_scale=7.5, method="hutchinson_fd")
        m.rows = 0
    res = SIGNALS[name](m, 12, initial_noise(scenario, S), **kw)
    assert m.rows == S * (res.n_evals + 2 * res.n_jvps)  # a JVP through the batched branches passes both rows
    assert torch.isfinite(res.score).all()


def test_ddim_sampler_matches_diffusers_on_the_mixture(scenario):
    from diffusers import DDIMScheduler

    x = initial_noise(scenario, 2)
    ours = ddim_sample(scenario, 3, x, n_steps=20, guidance_scale=3.0).x0
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(20)
    sched.alphas_cumprod = scenario.schedule.alphas_cumprod.clone()  # float64, as the mixture's
    sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    lat = x.clone()
    for t in sched.timesteps:
        u, c = scenario.eps(lat, int(t), None), scenario.eps(lat, int(t), 3)
        lat = sched.step(u + 3.0 * (c - u), t, lat, eta=0.0).prev_sample
    torch.testing.assert_close(ours, lat, rtol=1e-10, atol=1e-10)


def test_memorized_generations_land_on_their_training_point(scenario):
    x = initial_noise(scenario, 8)
    x0 = ddim_sample(scenario, 0, x, n_steps=50, guidance_scale=1.0).x0
    x_m = scenario.data_law(0).means[0]
    # w = 1 samples the conditional law N(x_m, 1e-4 I): within a few standard deviations
    assert float((x0 - x_m).norm(dim=-1).max()) < 5 * math.sqrt(8 * 1e-4)


def test_trackers_and_combined_detector(scenario):
    x = initial_noise(scenario, 6)
    traces = {}
    for c in (0, 12):
        res = ddim_sample(scenario, c, x, n_steps=10, trackers={
            "kappa": KappaDeltaTracker(4, generator=torch.Generator().manual_seed(c)), "norm": GuidanceNormTracker()})
        assert res.trace["kappa"].shape == (10, 6) and res.n_evals == 10 * (2 + 8)
        traces[c] = res.trace
    # direction and magnitude each rank the memorized condition above the generalizing one at late steps
    late = slice(5, 10)
    assert traces[0]["kappa"][late].mean() < traces[12]["kappa"][late].mean()
    k = torch.cat([traces[0]["kappa"][-1], traces[12]["kappa"][-1]])
    g = torch.cat([traces[0]["norm"][-1], traces[12]["norm"][-1]])
    ref = combined_score(k, g, reference=(traces[12]["kappa"][-1], traces[12]["norm"][-1]))
    z_dir = (-k - (-traces[12]["kappa"][-1]).mean()) / traces[12]["kappa"][-1].std()
    z_mag = (g - traces[12]["norm"][-1].mean()) / traces[12]["norm"][-1].std()
    torch.testing.assert_close(ref, z_dir + z_mag)


def test_guidance_alignment_matches_the_geometry_cosines():
    from memgeo.geometry import alignment_cosine, alignment_cosine_per_position
    from memgeo.guidance import guidance_alignment

    g = torch.Generator().manual_seed(3)
    eu, gap = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    torch.testing.assert_close(guidance_alignment(eu, gap), alignment_cosine_per_position(gap, eu))
    eu2, gap2 = eu.flatten(1), gap.flatten(1)
    torch.testing.assert_close(guidance_alignment(eu2, gap2), alignment_cosine(gap2, eu2))
    # a gap below the relative floor has no direction: its cosine counts as 0, without NaN
    out = guidance_alignment(eu2, 1e-9 * gap2)
    assert torch.equal(out, torch.zeros(5, dtype=out.dtype))


class Repelling:
    """A model whose score is +x (log-density convex everywhere): its FLIPD exceeds d at every point."""

    prediction_type = "epsilon"
    event_shape = (4,)
    dtype = torch.float64

    def __init__(self, schedule):
        self.schedule = schedule

    def alpha(self, t):
        return self.schedule.alpha(t)

    def sigma(self, t):
        return self.schedule.sigma(t)

    def timesteps(self, n):
        from memgeo.gmm import ddim_timesteps

        return ddim_timesteps(n, 1000, steps_offset=1)

    def eps(self, x, t, cond=None):
        return -float(self.sigma(t)) * x  # s = -eps / sigma = x


def test_flipd_never_reports_lid_above_d_silently(scenario):
    from memgeo.detect import flipd_signal

    m = Repelling(scenario.schedule)
    x0 = initial_noise(m, [0, 1])
    with pytest.warns(UserWarning, match="above the ambient dimension d = 4 for 2 of 2 samples"):
        res = flipd_signal(m, None, x0, x0=x0, t=101, method="hutchinson_fd")
    assert bool(res.extras["above_ambient"].all()) and bool((res.value > 4).all())


def test_flipd_probe_time_is_the_smallest_valid_one_and_is_cached(scenario):
    from memgeo.detect.flipd import local_intrinsic_dimension

    t0 = flipd_t0(scenario, n_steps=10, guidance_scale=7.5, reference=[0, 1, 12, 13])
    ts = sorted(int(t) for t in scenario.timesteps(10) if int(t) <= 500)
    assert t0 in ts
    x0 = [ddim_sample(scenario, c, initial_noise(scenario, [1000 + i]), n_steps=10).denoised
          for i, c in enumerate([0, 1, 12, 13])]
    for t in ts[: ts.index(t0) + 1]:  # below t0 the reference leaves LID <= d; at t0 it holds
        lid = torch.cat([local_intrinsic_dimension(scenario, c, x, t, "hutchinson_fd", 8, torch.Generator().manual_seed(0)).value
                         for c, x in zip([0, 1, 12, 13], x0)])
        assert (float(lid.max()) <= 8) == (t == t0)  # every reference sample within d
    calls = []
    real = scenario.eps
    scenario.eps = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        assert flipd_t0(scenario, n_steps=10, guidance_scale=7.5, reference=[0, 1, 12, 13]) == t0 and not calls
    finally:
        del scenario.eps


def _step_state(mix, cond, x, t):
    from memgeo.parameterization import eps_to_x0
    from memgeo.sampling import StepState

    a, s = float(mix.alpha(t)), float(mix.sigma(t))
    eps_u, eps_c = mix.eps(x, t, None), mix.eps(x, t, cond)
    eps = eps_u + 7.5 * (eps_c - eps_u)
    return StepState(0, t, x, eps_u, eps_c, eps, eps_to_x0(eps, x, a, s), a, s, 7.5, cond)


@pytest.mark.parametrize("t", [21, 401, 961])
def test_kappa_delta_tracker_is_the_mean_cosine_of_the_analytic_gap_score(scenario, t):
    """At every noise level the per-step value is the mean cosine of the closed-form
    grad log p_t(c | x) = s_c - s_u with the outward normal, on the sphere of radius sigma_t sqrt(d)
    around alpha_t x0_hat: bounded by 1, with no 1/sigma_t factor."""
    x = initial_noise(scenario, [3, 4, 5])
    state = _step_state(scenario, 2, x, t)
    got = KappaDeltaTracker(6, generator=torch.Generator().manual_seed(5))(scenario, state)
    N = torch.randn((6, 3, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    N = N / N.norm(dim=-1, keepdim=True)
    pts = state.alpha * state.x0_hat + state.sigma * math.sqrt(8) * N  # [6, 3, 8]
    gap = scenario.score(pts.reshape(18, 8), t, 2) - scenario.score(pts.reshape(18, 8), t, None)
    want = torch.nn.functional.cosine_similarity(gap.reshape(6, 3, 8), N, dim=-1).mean(0)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert bool((got.abs() <= 1).all())


def test_kappa_delta_weights_every_step_alike(scenario):
    """The combined value is the plain mean of the per-step values, each in [-1, 1]: no step can move it
    by more than 2/n, whatever its sigma_t (the boundary flux (d/r) kappa would weight the last of 50
    steps about 24 times the first on Stable Diffusion's schedule)."""
    x = initial_noise(scenario, 4)
    res = SIGNALS["kappa_delta"](scenario, 0, x, n_steps=12, generator=torch.Generator().manual_seed(0))
    trace = res.extras["trace"]
    assert trace.shape == (12, 4) and bool((trace.abs() <= 1).all())
    torch.testing.assert_close(res.value, trace.mean(0))
    torch.testing.assert_close(res.score, -trace.mean(0))
    assert res.extras["trace_t"] == [int(t) for t in scenario.timesteps(12)]
    five = SIGNALS["kappa_delta"](scenario, 0, x, n_steps=12, track_steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(five.value, trace[:5].mean(0))


def test_branch_diagnostic_is_kappa_delta_and_the_analytic_branch_cosines(scenario):
    from memgeo.detect import branch_diagnostic

    conds, S, n = [0, 15], 3, 8
    diag = branch_diagnostic(scenario, conds, seeds=S, n_steps=n, n_directions=5, seed=40)
    assert all(diag[k].shape == (n, len(conds) * S) for k in ("cos_c", "cos_u", "cos_gap", "gap_norm"))
    x_T = initial_noise(scenario, S)
    for i, c in enumerate(conds):
        cols = slice(i * S, (i + 1) * S)
        res = ddim_sample(scenario, c, x_T, n_steps=n, trackers={
            "kappa": KappaDeltaTracker(5, generator=torch.Generator().manual_seed(40 + i)), "norm": GuidanceNormTracker()})
        torch.testing.assert_close(diag["cos_gap"][:, cols], -res.trace["kappa"])  # kappa-delta is minus the gap's cosine
        torch.testing.assert_close(diag["gap_norm"][:, cols], res.trace["norm"])
    # one step by hand: each branch's cosine from the closed-form eps of the mixture
    state = _step_state(scenario, 15, x_T, int(scenario.timesteps(n)[0]))
    from memgeo.sampling import ProbeCosineTracker

    got = ProbeCosineTracker(5, generator=torch.Generator().manual_seed(1))(scenario, state)
    N = torch.randn((5, S, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    N = N / N.norm(dim=-1, keepdim=True)
    pts = (state.alpha * state.x0_hat + state.sigma * math.sqrt(8) * N).reshape(5 * S, 8)
    for k, cond in enumerate((15, None)):
        e = scenario.eps(pts, state.t, cond).reshape(5, S, 8)
        torch.testing.assert_close(got[k], torch.nn.functional.cosine_similarity(e, N, dim=-1).mean(0))
