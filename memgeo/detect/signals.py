r"""Memorization signals, each written once against the score-model interface (docs/conventions.md, section 3).

Every signal takes a score model, a condition and initial noise ``x_T: [S, *event]`` (one row
per seed) and returns a :class:`SignalResult` whose ``score`` is oriented so that larger means
"more likely memorized", beside the raw ``value`` and the model evaluations and JVPs it used per
sample. The same functions run on a :class:`~memgeo.gmm.ConditionalGaussianMixture`, the
testbed and Stable Diffusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .._checks import check_int, check_positive
from ..geometry import flipd, jvp, p_laplacian
from ..parameterization import eps_to_score
from .sampling import StepState, ddim_sample, guidance_pair

__all__ = [
    "SignalResult",
    "guidance_norm",
    "anisotropy",
    "guidance_alignment",
    "sharpness",
    "p_laplace_flux",
    "kappa_delta",
    "KappaDeltaTracker",
    "GuidanceNormTracker",
    "flipd_signal",
    "combined_score",
    "SIGNALS",
    "GENERATION_SIGNALS",
    "ANISOTROPY_WEIGHTS",
]

ANISOTROPY_WEIGHTS = {"sd1": (1.0, 2.0), "sd2": (1.0, 0.1)}


@dataclass
class SignalResult:
    """One signal on ``S`` samples.

    Attributes:
        name: the signal's name.
        score: detection score ``[S]``, larger = more likely memorized.
        value: the raw quantity ``[S]`` (e.g. a p-Laplacian, whose sign is flipped in ``score``).
        n_evals: model (UNet) evaluations per sample.
        n_jvps: Jacobian-vector products per sample.
        extras: further per-sample quantities (components, per-step traces).
    """

    name: str
    score: torch.Tensor
    value: torch.Tensor
    n_evals: int
    n_jvps: int = 0
    extras: dict = field(default_factory=dict)


def _norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=-1)


def _first_timestep(model, t, n_steps):
    return int(model.timesteps(n_steps)[0]) if t is None else int(t)


def guidance_norm(model, cond, x_T: torch.Tensor, *, t: int | None = None, n_steps: int = 50) -> SignalResult:
    r"""Guidance norm (Wen et al., ICLR 2024): :math:`\|\epsilon_c - \epsilon_u\|` at ``x_T`` and the first timestep.

    Two model evaluations per sample. Its per-step average along generation is the tracker
    :class:`GuidanceNormTracker`.
    """
    t = _first_timestep(model, t, n_steps)
    with torch.no_grad():
        eps_u, eps_c = guidance_pair(model, x_T, t, cond)
    v = _norm(eps_c - eps_u)
    return SignalResult("guidance_norm", v, v, 2, extras={"t": t})


def guidance_alignment(eps_u: torch.Tensor, d_eps: torch.Tensor, *, relative_floor: float = 1e-6) -> torch.Tensor:
    """Alignment of the guidance gap with the unconditional prediction (Asthana & Belagiannis, ICLR 2026).

    cos(d_eps, eps_u) = cos(s_delta, s_u), per position over channels for latents [S, C, H, W]
    (mean over positions), else over the whole event; shape [S]. The low-noise term of
    :func:`anisotropy`. Where the gap is below ``relative_floor`` times ``|eps_u|`` (the
    condition's posterior is saturated) it has no direction and the cosine counts as 0; the
    computation stays NaN-free for gradients.
    """
    dim = 1 if eps_u.dim() >= 4 else tuple(range(1, eps_u.dim()))
    dot = (d_eps * eps_u).sum(dim)
    nd, nu = d_eps.norm(dim=dim), eps_u.norm(dim=dim)
    ok = (nd > relative_floor * nu) & (nu > 0)
    cos = torch.where(ok, dot / torch.where(ok, nd * nu, torch.ones_like(nd)), torch.zeros_like(nd))
    return cos.flatten(1).mean(-1) if cos.dim() > 1 else cos


def anisotropy(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    weights: tuple[float, float] | str = "sd1",
    n_steps: int = 50,
    t_hi: int | None = None,
    t_lo: int | None = None,
) -> SignalResult:
    r"""Anisotropy signal (Asthana & Belagiannis, ICLR 2026), on pure noise with four evaluations.

    :math:`g_{norm} \|\Delta\epsilon(x_T, t_{hi})\| + g_{cos}\,\mathrm{mean}_{pos} \cos_{channel}(\epsilon_u, \Delta\epsilon)(x_T, t_{lo})`
    on the same ``x_T``: the isotropic norm at high noise plus the anisotropic alignment of the
    guidance gap with the unconditional score at low noise (a vanishing gap contributes cosine 0).
    ``t_hi``, ``t_lo`` default to the first
    and third-to-last timesteps of ``n_steps``-step DDIM (981 and 41 for 50 steps);
    ``weights`` = ``(g_norm, g_cos)``: ``"sd1"`` (1, 2) or ``"sd2"`` (1, 0.1).
    """
    g_norm, g_cos = ANISOTROPY_WEIGHTS[weights] if isinstance(weights, str) else weights
    ts = model.timesteps(n_steps)
    if len(ts) < 3 and t_lo is None:
        raise ValueError("n_steps must be >= 3 to place t_lo at the third-to-last step")
    t_hi = int(ts[0]) if t_hi is None else int(t_hi)
    t_lo = int(ts[-3]) if t_lo is None else int(t_lo)
    with torch.no_grad():
        eu_hi, ec_hi = guidance_pair(model, x_T, t_hi, cond)
        eu_lo, ec_lo = guidance_pair(model, x_T, t_lo, cond)
    norm_term = _norm(ec_hi - eu_hi)
    cos_term = guidance_alignment(eu_lo, ec_lo - eu_lo)
    v = g_norm * norm_term + g_cos * cos_term
    return SignalResult("anisotropy", v, v, 4, extras={"norm": norm_term, "cos": cos_term, "t_hi": t_hi, "t_lo": t_lo})


def sharpness(model, cond, x_T: torch.Tensor, *, t: int | None = None, n_steps: int = 50) -> SignalResult:
    r"""Sharpness (Jeon et al., ICML 2025): :math:`\|(H_c - H_u)\, s_\delta\|` at ``x_T`` and the first timestep.

    With :math:`s_\delta = -\Delta\epsilon/\sigma_t` and :math:`H_c - H_u = -\nabla\Delta\epsilon/\sigma_t`,
    this is :math:`\|J_{\Delta\epsilon}\Delta\epsilon\| / \sigma_t^2`: two evaluations for the gap and
    one JVP through the batched conditional and unconditional branches.
    """
    t = _first_timestep(model, t, n_steps)
    sigma = float(model.sigma(t))

    def gap(x):
        eps_u, eps_c = guidance_pair(model, x, t, cond)
        return eps_c - eps_u

    with torch.no_grad():
        d_eps = gap(x_T)
    _, Jd = jvp(gap, x_T, d_eps)
    v = _norm(Jd.detach()) / sigma**2
    return SignalResult("sharpness", v, v, 2, 1, extras={"t": t})


def _renoise(model, x0: torch.Tensor, t: int, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(x0.dtype).to(x0.device)
    return float(model.alpha(t)) * x0 + float(model.sigma(t)) * noise


def _generate(model, cond, x_T, n_steps, guidance_scale):
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    return res.denoised, res.n_evals


def p_laplace_flux(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    p: float = 1.0,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    t_probe: int | None = None,
    radius_scale: float = 1.0,
    n_directions: int = 16,
    branch: str = "conditional",
    method: str = "flux",
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""Post-generation p-Laplace flux (Brokman et al., SSVM 2025).

    Generates :math:`\hat x_0` from ``x_T`` (DDIM, CFG; the last denoised estimate; or takes ``x0``), re-noises it at
    ``t_probe`` (default: the third-to-last DDIM timestep, 41 for 50 steps) and estimates
    :math:`\Delta_p \log p_t` of the ``branch`` score (``"conditional"``, or ``"unconditional"`` when the
    prompt is unavailable) by boundary flux on a sphere of radius
    ``radius_scale * sigma_t * sqrt(d)`` around the re-noised latent, with ``n_directions``
    directions (``method="flux_antithetic"`` uses antithetic pairs). p = 1 by default; memorized
    samples sit in sharp basins, where :math:`\Delta_p` is strongly negative, so ``score = -value``.
    """
    n_dir = check_int("n_directions", n_directions, minimum=2)
    check_positive("radius_scale", radius_scale)
    if branch not in ("conditional", "unconditional"):
        raise ValueError(f"branch must be 'conditional' or 'unconditional', got {branch!r}")
    cost = 0
    if x0 is None:
        x0, cost = _generate(model, cond, x_T, n_steps, guidance_scale)
    ts = model.timesteps(n_steps)
    t = int(ts[-3]) if t_probe is None else int(t_probe)
    x_t = _renoise(model, x0, t, generator)
    sigma = float(model.sigma(t))
    c = cond if branch == "conditional" else None
    d = math.prod(x_T.shape[1:])
    with torch.no_grad():
        est = p_laplacian(lambda z: eps_to_score(model.eps(z, t, c), sigma), x_t, p, method=method,
                          n_probes=n_dir, radius=radius_scale * sigma * math.sqrt(d), generator=generator)
    return SignalResult("p_laplace", -est.value, est.value, cost + est.n_evals,
                        extras={"stderr": est.stderr, "t": t, "x0": x0})


class GuidanceNormTracker:
    """Per-step guidance norm ``|eps_c - eps_u|`` (Wen et al. 2024, averaged over steps); free."""

    evals_per_step = 0

    def __call__(self, model, state: StepState) -> torch.Tensor:
        return _norm(state.eps_c - state.eps_u)


class KappaDeltaTracker:
    r"""Per-step kappa-delta (Brokman et al., NeurReps 2025).

    The direction-only flux of the guidance-gap field :math:`s_\delta = -\Delta\epsilon/\sigma_t` on a
    sphere of radius :math:`\sigma_t\sqrt d` around :math:`\alpha_t \hat x_0`:
    :math:`\kappa_\delta = \frac{d}{r}\frac1n\sum_j \langle \hat s_\delta(\alpha_t\hat x_0 + r n_j), n_j\rangle`,
    2 evaluations per direction (the batched branches). Where the gap is below ``relative_floor``
    (1e-6) times the predictions' norm - the posterior of the condition is saturated and the gap's
    direction is round-off - it contributes zero flux.
    """

    def __init__(self, n_directions: int = 4, *, generator: torch.Generator | None = None, relative_floor: float = 1e-6):
        self.n_directions = check_int("n_directions", n_directions, minimum=1)
        self.relative_floor = relative_floor
        self.evals_per_step = 2 * self.n_directions
        self.generator = generator

    def __call__(self, model, state: StepState) -> torch.Tensor:
        S = state.x.shape[0]
        d = math.prod(state.x.shape[1:])
        r = state.sigma * math.sqrt(d)
        center = state.alpha * state.x0_hat  # [S, *event]
        n = torch.randn((self.n_directions, *state.x.shape), generator=self.generator, dtype=torch.float64)
        n = (n / n.flatten(2).norm(dim=-1).reshape(self.n_directions, S, *([1] * (state.x.dim() - 1)))).to(state.x.dtype)
        pts = (center.unsqueeze(0) + r * n).reshape(self.n_directions * S, *state.x.shape[1:])
        eps_u, eps_c = guidance_pair(model, pts, state.t, _repeat_cond(state.cond, self.n_directions, S))
        s_delta = -(eps_c - eps_u)  # direction of grad log p_t(c | x); the 1/sigma_t scale drops out
        shape = (-1, *([1] * (s_delta.dim() - 1)))
        norm = _norm(s_delta).reshape(shape)
        scale = torch.maximum(_norm(eps_c), _norm(eps_u)).reshape(shape)
        # a gap below 1e-6 of the predictions (p_t(c | x) saturated) has no direction above round-off
        defined = norm > self.relative_floor * scale
        unit = torch.where(defined, s_delta / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(s_delta))
        flux = (unit.reshape(self.n_directions, S, -1) * n.reshape(self.n_directions, S, -1)).sum(-1)
        return (d / r) * flux.mean(0)


def _repeat_cond(cond, m: int, S: int):
    """A condition for ``m`` stacked copies of an ``S``-row batch (per-row conditions are repeated)."""
    per_row = isinstance(cond, (list, tuple)) or (
        isinstance(cond, torch.Tensor) and ((not cond.is_floating_point() and cond.dim() == 1) or cond.dim() == 3)
    )  # lists, per-row indices [S] and per-row embeddings [S, L, D]; logits [C] and embeddings [L, D] are shared
    if not per_row:
        return cond
    if isinstance(cond, torch.Tensor):
        return cond.repeat(m, *([1] * (cond.dim() - 1)))
    return list(cond) * m


def kappa_delta(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    n_directions: int = 4,
    track_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""kappa-delta tracked along generation (Brokman et al., NeurReps 2025).

    Runs DDIM with :class:`KappaDeltaTracker` at every step; the signal is the mean of
    :math:`\kappa_\delta` over the first ``track_steps`` steps (all by default). Memorized prompts
    pull trajectories into a basin where the gap field converges, so ``score = -value``. The
    per-step curves are in ``extras["trace"]`` (``[n_steps, S]``) with the guidance norm beside them.
    """
    tracker = KappaDeltaTracker(n_directions, generator=generator)
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                      trackers={"kappa_delta": tracker, "guidance_norm": GuidanceNormTracker()})
    k = check_int("track_steps", track_steps, minimum=1) if track_steps is not None else n_steps
    trace = res.trace["kappa_delta"]
    v = trace[:k].mean(0)
    return SignalResult("kappa_delta", -v, v, res.n_evals,
                        extras={"trace": trace, "guidance_norm_trace": res.trace["guidance_norm"], "x0": res.denoised})


def flipd_signal(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    t: int | None = None,
    n_probes: int = 8,
    method: str = "hutchinson_fd",
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""FLIPD local intrinsic dimension of a generated sample (Kamkari et al. 2024; Ross et al. 2025).

    :math:`\mathrm{LID} = d + \sigma_t^2(\operatorname{tr}\nabla s + |s|^2)` of the conditional score of
    :math:`p_t` at the generated sample scaled to :math:`\alpha_t \hat x_0` without added noise (at a
    sample of :math:`p_t` itself the expectation is d for every law, since
    :math:`E[\Delta\log p + |\nabla\log p|^2] = 0`); ``t`` defaults to the last DDIM timestep (1); the trace by
    ``method`` with ``n_probes`` probes (central differences by default: 2 evaluations per probe).
    Memorized samples have low LID, so ``score = -LID``.
    """
    cost = 0
    if x0 is None:
        x0, cost = _generate(model, cond, x_T, n_steps, guidance_scale)
    t = int(model.timesteps(n_steps)[-1]) if t is None else int(t)
    sigma = float(model.sigma(t))
    x_t = float(model.alpha(t)) * x0  # the clean point: at a re-noised one E[LID] = d for any law
    field = lambda z: eps_to_score(model.eps(z, t, cond), sigma)  # noqa: E731
    with torch.no_grad() if method != "hutchinson" else torch.enable_grad():
        est = flipd(field, x_t, sigma, method=method, n_probes=n_probes, generator=generator)
    return SignalResult("flipd", -est.value, est.value, cost + est.n_evals, est.n_jvps,
                        extras={"stderr": est.stderr, "t": t})


def combined_score(direction: torch.Tensor, magnitude: torch.Tensor, *, reference=None, weights=(1.0, 1.0)) -> torch.Tensor:
    r"""Mid-generation detector combining direction and magnitude (Brokman et al., NeurReps 2025).

    :math:`w_1 z(-\kappa_\delta) + w_2 z(\|\Delta\epsilon\|)`, each standardized by the mean and
    standard deviation of ``reference = (direction_ref, magnitude_ref)`` (for example ordinary
    prompts), or of the inputs themselves when no reference is given. Works per step on traces.
    """
    ref_d, ref_m = reference if reference is not None else (direction, magnitude)

    def z(v, ref):
        sd = ref.std()
        return (v - ref.mean()) / (sd if float(sd) > 0 else 1.0)

    return weights[0] * z(-direction, -ref_d) + weights[1] * z(magnitude, ref_m)


GENERATION_SIGNALS = ("p_laplace", "kappa_delta", "flipd")  # signals that generate (or take) a sample first

SIGNALS = {
    "guidance_norm": guidance_norm,
    "anisotropy": anisotropy,
    "sharpness": sharpness,
    "p_laplace": p_laplace_flux,
    "kappa_delta": kappa_delta,
    "flipd": flipd_signal,
}
