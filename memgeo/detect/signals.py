r"""Memorization signals, each written once against the score-model interface (docs/conventions.md, section 3).

Every signal takes a score model, a condition and initial noise ``x_T: [S, *event]`` (one row
per seed) and returns a :class:`SignalResult` whose ``score`` is oriented so that larger means
"more likely memorized", beside the raw ``value`` and the model evaluations and JVPs it used per
sample. The same functions run on a :class:`~memgeo.gmm.ConditionalGaussianMixture`, the
testbed and Stable Diffusion.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .._checks import check_int, check_p, check_positive
from ..geometry import flipd, jvp, p_laplacian
from ..parameterization import eps_to_score, from_eps
from .presets import ANISOTROPY_WEIGHTS, anisotropy_weights, resolve
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
    "flipd_t0",
    "ProbeCosineTracker",
    "combined_score",
    "SIGNALS",
    "GENERATION_SIGNALS",
    "GUIDED_SIGNALS",
    "ANISOTROPY_WEIGHTS",
]


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


def _raw_prediction(model, eps: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """The model's own output (eps, v or x0) recovered from its eps prediction at ``x``, ``t``."""
    kind = getattr(model, "prediction_type", "epsilon")
    return eps if kind == "epsilon" else from_eps(eps, x, float(model.alpha(t)), float(model.sigma(t)), kind)


def guidance_norm(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", steps: str | None = None,
                  space: str | None = None, t: int | None = None, n_steps: int = 50,
                  guidance_scale: float = 7.5) -> SignalResult:
    r"""Guidance norm (Wen et al., ICLR 2024): :math:`\|\epsilon_c - \epsilon_u\|`.

    ``steps="first"`` (memgeo preset): at ``x_T`` and the first timestep (or ``t``), two
    evaluations per sample. ``steps="all"`` (official preset, as the released code): the mean of
    the norm over every step of the CFG DDIM generation at ``guidance_scale``, ``2 n_steps``
    evaluations; the per-step curve is in ``extras["trace"]`` (the tracker :class:`GuidanceNormTracker`).
    ``space``: the gap of eps predictions (``"eps"``) or of the model's raw outputs
    (``"prediction"``, as released: on v-prediction models :math:`|v_c - v_u| = |\Delta\epsilon|/\alpha_t`).
    """
    opts = resolve("guidance_norm", preset, steps=steps, space=space)
    if opts["space"] not in ("eps", "prediction"):
        raise ValueError(f"space must be 'eps' or 'prediction', got {opts['space']!r}")
    if opts["steps"] == "all":
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"guidance_norm": GuidanceNormTracker(space=opts["space"])})
        trace = res.trace["guidance_norm"]
        v = trace.mean(0)
        return SignalResult("guidance_norm", v, v, res.n_evals, extras={"trace": trace})
    if opts["steps"] != "first":
        raise ValueError(f"steps must be 'first' or 'all', got {opts['steps']!r}")
    t = _first_timestep(model, t, n_steps)
    with torch.no_grad():
        eps_u, eps_c = guidance_pair(model, x_T, t, cond)
    if opts["space"] == "prediction":
        eps_u, eps_c = _raw_prediction(model, eps_u, x_T, t), _raw_prediction(model, eps_c, x_T, t)
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
    preset: str = "memgeo",
    weights=None,
    norm: str | None = None,
    space: str | None = None,
    n_steps: int = 50,
    t_hi: int | None = None,
    t_lo: int | None = None,
) -> SignalResult:
    r"""Anisotropy signal (Asthana & Belagiannis, ICLR 2026), on pure noise with four evaluations.

    :math:`g_{norm}\, N + g_{cos}\,\mathrm{mean}_{pos} \cos_{channel}(\epsilon_u, \Delta\epsilon)(x_T, t_{lo})`
    on the same ``x_T``: the isotropic gap norm N at high noise plus the anisotropic alignment of
    the guidance gap with the unconditional prediction at low noise (a vanishing gap contributes
    cosine 0). ``t_hi``, ``t_lo`` default to the first and third-to-last timesteps of
    ``n_steps``-step DDIM (981 and 41 for 50 steps).

    ``weights``: ``"auto"`` (by prediction type: epsilon -> ``"sd1"`` (1, 2), v -> ``"sd2"`` (1, 0.1)),
    a family name, or ``(g_norm, g_cos)``. ``norm``:

    * ``"reference_size"`` (memgeo preset): :math:`N = |\Delta\epsilon|\sqrt{d_{ref}/d}`, the norm the
      gap would have at the latent size ``d_ref`` the weights were tuned at (SD v1 4x64x64, SD v2
      4x96x96). The norm grows like :math:`\sqrt d` at a fixed per-coordinate gap while the mean
      cosine does not, so this keeps the balance of the two terms on any latent size; on the
      models the weights come from it equals the official value. Explicit weights have no
      reference size: N is the raw norm.
    * ``"raw"``: :math:`N = |\Delta\epsilon|`.
    * ``"released"`` (official): the raw norm, except on v-prediction models, where the released
      code computes the gap from :math:`(\alpha v - x)/\sigma^2`, i.e. :math:`N = |\Delta\epsilon|/\sigma_{hi}^2`.

    ``space``: the cosine between eps predictions (``"eps"``, memgeo) or between the model's raw
    outputs (``"prediction"``, official: :math:`\cos(v_u, v_c - v_u)` on v-prediction models).
    """
    opts = resolve("anisotropy", preset, weights=weights, norm=norm, space=space)
    ts = model.timesteps(n_steps)
    if len(ts) < 3 and t_lo is None:
        raise ValueError("n_steps must be >= 3 to place t_lo at the third-to-last step")
    t_hi = int(ts[0]) if t_hi is None else int(t_hi)
    t_lo = int(ts[-3]) if t_lo is None else int(t_lo)
    with torch.no_grad():
        v, norm_term, cos_term, (g_norm, g_cos) = anisotropy_terms(model, x_T, cond, t_hi, t_lo, opts)
    return SignalResult("anisotropy", v, v, 4, extras={"norm": norm_term, "cos": cos_term, "t_hi": t_hi, "t_lo": t_lo,
                                                      "weights": (g_norm, g_cos)})


def anisotropy_terms(model, x_T: torch.Tensor, cond, t_hi: int, t_lo: int, opts: dict):
    """The anisotropy combination and its terms ``(value, norm, cos, (g_norm, g_cos))`` under ``opts``
    (``weights``, ``norm``, ``space``: see :func:`anisotropy`), differentiable in ``x_T`` and ``cond``."""
    g_norm, g_cos, d_ref = anisotropy_weights(opts["weights"], model)
    if opts["norm"] not in ("reference_size", "raw", "released") or opts["space"] not in ("eps", "prediction"):
        raise ValueError(f"norm must be 'reference_size', 'raw' or 'released' and space 'eps' or 'prediction', "
                         f"got {opts['norm']!r} and {opts['space']!r}")
    eu_hi, ec_hi = guidance_pair(model, x_T, t_hi, cond)
    eu_lo, ec_lo = guidance_pair(model, x_T, t_lo, cond)
    norm_term = _norm(ec_hi - eu_hi)
    d = math.prod(x_T.shape[1:])
    if opts["norm"] == "reference_size" and d_ref is not None:
        norm_term = norm_term * math.sqrt(d_ref / d)
    elif opts["norm"] == "released" and getattr(model, "prediction_type", "epsilon") == "v_prediction":
        norm_term = norm_term / float(model.sigma(t_hi)) ** 2  # the released code's score of a v model
    if opts["space"] == "prediction":
        eu_lo, ec_lo = _raw_prediction(model, eu_lo, x_T, t_lo), _raw_prediction(model, ec_lo, x_T, t_lo)
    cos_term = guidance_alignment(eu_lo, ec_lo - eu_lo)
    return g_norm * norm_term + g_cos * cos_term, norm_term, cos_term, (g_norm, g_cos)


def sharpness(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", t: int | None = None,
              n_steps: int = 50) -> SignalResult:
    r"""Sharpness (Jeon et al., ICML 2025): :math:`\|(H_c - H_u)\, s_\delta\|` at ``x_T`` and the first timestep.

    With :math:`s_\delta = -\Delta\epsilon/\sigma_t` and :math:`H_c - H_u = -\nabla\Delta\epsilon/\sigma_t`,
    this is :math:`\|J_{\Delta\epsilon}\Delta\epsilon\| / \sigma_t^2`: two evaluations for the gap and
    one JVP through the batched conditional and unconditional branches. Both presets are the same
    (memgeo matches the released code).
    """
    resolve("sharpness", preset)
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


def _sphere_directions(n: int, like: torch.Tensor, generator) -> torch.Tensor:
    """``n`` uniform unit directions per row of ``like``: ``[n, S, *event]``."""
    N = torch.randn((n, *like.shape), generator=generator, dtype=torch.float64)
    N = N / N.flatten(2).norm(dim=-1).reshape(n, like.shape[0], *([1] * (like.dim() - 1)))
    return N.to(like.dtype).to(like.device)


def _mean_cosine_flux(field, center: torch.Tensor, radius: float, n_dir: int, p: float, generator, *,
                      chunk: int = 32):
    r"""The released p-Laplace/kappa-delta estimate: :math:`\frac1n\sum_j \cos(F(c + r n_j), n_j)\,|F|^{p-2}`.

    (For p = 1 the direction-only flux without its d/r factor; for p != 1 the released code scales the
    cosine, not ``F`` itself, by :math:`|F|^{p-2}`.) Returns the mean and its standard error per row.
    """
    S = center.shape[0]
    N = _sphere_directions(n_dir, center, generator)  # [n, S, *event]
    terms = []
    for a in range(0, n_dir, chunk):
        Nc = N[a:a + chunk]
        m = Nc.shape[0]
        F = field((center.unsqueeze(0) + radius * Nc).reshape(m * S, *center.shape[1:])).reshape(m, S, -1)
        nf = Nc.reshape(m, S, -1)
        norm = F.norm(dim=-1)
        cos = (F * nf).sum(-1) / (norm * nf.norm(dim=-1)).clamp_min(1e-8)
        terms.append(cos if p == 1 else cos * norm ** (p - 2))
    terms = torch.cat(terms)  # [n, S]
    return terms.mean(0), terms.std(0) / math.sqrt(n_dir)


def p_laplace_flux(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    preset: str = "memgeo",
    p: float | None = None,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    t_probe: int | None = None,
    radius_scale: float = 1.0,
    n_directions: int | None = None,
    branch: str = "conditional",
    method: str = "flux",
    field: str | None = None,
    center: str | None = None,
    value: str | None = None,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""Post-generation p-Laplace flux (Brokman et al., SSVM 2025).

    Generates :math:`\hat x_0` from ``x_T`` (DDIM, CFG; the last denoised estimate; or takes ``x0``)
    and probes the ``branch`` field (``"conditional"``, or ``"unconditional"`` when the prompt is
    unavailable) on a sphere of radius ``radius_scale * sigma_t * sqrt(d)`` with ``n_directions``
    directions at ``t_probe``. Memorized samples sit in sharp basins.

    memgeo preset: the score field, the sphere around :math:`\hat x_0` re-noised at ``t_probe``
    (default: the third-to-last DDIM timestep, 41 for 50 steps), 16 directions, and the boundary
    flux estimate of :math:`\Delta_p \log p_t` (``method="flux_antithetic"`` uses antithetic
    pairs); it is strongly negative in a basin, so ``score = -value``.

    official preset (the released code): the conditional eps prediction as the field, t = 10, the
    sphere around :math:`\sqrt{\bar\alpha_t}\hat x_0` with no added noise, 128 directions, and the
    mean cosine :math:`\frac1n\sum_j\cos(\hat\epsilon(c + r n_j), n_j)` (memgeo's flux of the score
    is :math:`-\frac{d}{r}` times it for p = 1); it is positive in a basin, so ``score = value``.
    For p != 1 it scales the cosine by :math:`|\hat\epsilon|^{p-2}` (not a p-Laplacian; reproduced).
    """
    opts = resolve("p_laplace", preset, p=p, n_directions=n_directions, t_probe=t_probe, field=field,
                   center=center, value=value)
    p = check_p(opts["p"])
    n_dir = check_int("n_directions", opts["n_directions"], minimum=2)
    check_positive("radius_scale", radius_scale)
    if branch not in ("conditional", "unconditional"):
        raise ValueError(f"branch must be 'conditional' or 'unconditional', got {branch!r}")
    if (opts["field"], opts["center"], opts["value"]) not in (("score", "renoised", "flux"), ("eps", "scaled", "mean_cosine")):
        raise ValueError("field/center/value must be ('score', 'renoised', 'flux') or ('eps', 'scaled', 'mean_cosine'), "
                         f"got {(opts['field'], opts['center'], opts['value'])}")
    cost = 0
    if x0 is None:
        x0, cost = _generate(model, cond, x_T, n_steps, guidance_scale)
    t = int(model.timesteps(n_steps)[-3]) if opts["t_probe"] is None else int(opts["t_probe"])
    sigma = float(model.sigma(t))
    c = cond if branch == "conditional" else None
    d = math.prod(x_T.shape[1:])
    r = radius_scale * sigma * math.sqrt(d)
    with torch.no_grad():
        if opts["value"] == "mean_cosine":
            centre = float(model.alpha(t)) * x0  # sqrt(abar_t) x0_hat, no added noise
            v, se = _mean_cosine_flux(lambda z: model.eps(z, t, c), centre, r, n_dir, p, generator)
            return SignalResult("p_laplace", v, v, cost + n_dir, extras={"stderr": se, "t": t, "x0": x0})
        x_t = _renoise(model, x0, t, generator)
        est = p_laplacian(lambda z: eps_to_score(model.eps(z, t, c), sigma), x_t, p, method=method,
                          n_probes=n_dir, radius=r, generator=generator)
    return SignalResult("p_laplace", -est.value, est.value, cost + est.n_evals,
                        extras={"stderr": est.stderr, "t": t, "x0": x0})


class GuidanceNormTracker:
    """Per-step guidance norm ``|eps_c - eps_u|`` (Wen et al. 2024, averaged over steps); free.

    ``space="prediction"``: the gap of the model's raw outputs (v on v-prediction models)."""

    evals_per_step = 0

    def __init__(self, space: str = "eps"):
        self.space = space

    def __call__(self, model, state: StepState) -> torch.Tensor:
        if self.space == "prediction":
            return _norm(_raw_prediction(model, state.eps_c, state.x, state.t)
                         - _raw_prediction(model, state.eps_u, state.x, state.t))
        return _norm(state.eps_c - state.eps_u)


def _probe_sphere(model, state: StepState, n_directions: int, generator):
    r"""Both branches on the kappa-delta sphere of a step: radius :math:`\sigma_t\sqrt d` around
    :math:`\alpha_t\hat x_0`. Returns ``(n, eps_u, eps_c)`` with the unit directions ``n`` and the
    predictions at ``centre + r n``, each ``[n_directions, S, d]``."""
    S = state.x.shape[0]
    d = math.prod(state.x.shape[1:])
    r = state.sigma * math.sqrt(d)
    center = state.alpha * state.x0_hat  # [S, *event]
    n = _sphere_directions(n_directions, state.x, generator)  # [n, S, *event]
    pts = (center.unsqueeze(0) + r * n).reshape(n_directions * S, *state.x.shape[1:])
    eps_u, eps_c = guidance_pair(model, pts, state.t, _repeat_cond(state.cond, n_directions, S))
    return tuple(v.reshape(n_directions, S, -1) for v in (n, eps_u, eps_c))


def _unit(v: torch.Tensor, scale: torch.Tensor, relative_floor: float) -> torch.Tensor:
    """``v / |v|`` over the last axis; zero where ``|v|`` is below ``relative_floor * scale`` (no direction
    above round-off), NaN-free."""
    norm = v.norm(dim=-1, keepdim=True)
    defined = norm > relative_floor * scale.unsqueeze(-1)
    return torch.where(defined, v / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(v))


class KappaDeltaTracker:
    r"""Per-step kappa-delta (Brokman et al., NeurReps 2025): the mean cosine of the guidance-gap field
    with the outward normal on a sphere around the step's denoised estimate.

    :math:`\kappa_\delta = \frac1n\sum_j \langle \hat s_\delta(\alpha_t\hat x_0 + r n_j), n_j\rangle`
    with :math:`s_\delta = -\Delta\epsilon/\sigma_t` and :math:`r = \sigma_t\sqrt d`, 2 evaluations per
    direction (the batched branches). It lies in [-1, 1] at every step: the boundary flux of the unit
    field is :math:`\frac{d}{r}\kappa_\delta`, whose factor :math:`1/\sigma_t` would make the last steps
    dominate any average over steps (conventions, section 3). Where the gap is below ``relative_floor``
    (1e-6) times the predictions' norm - the posterior of the condition is saturated and the gap's
    direction is round-off - it contributes zero.
    """

    def __init__(self, n_directions: int = 4, *, generator: torch.Generator | None = None, relative_floor: float = 1e-6):
        self.n_directions = check_int("n_directions", n_directions, minimum=1)
        self.relative_floor = relative_floor
        self.evals_per_step = 2 * self.n_directions
        self.generator = generator

    def __call__(self, model, state: StepState) -> torch.Tensor:
        n, eps_u, eps_c = _probe_sphere(model, state, self.n_directions, self.generator)
        scale = torch.maximum(eps_c.norm(dim=-1), eps_u.norm(dim=-1))
        s_delta = -(eps_c - eps_u)  # direction of grad log p_t(c | x); the 1/sigma_t scale drops out
        return (_unit(s_delta, scale, self.relative_floor) * n).sum(-1).mean(0)


class ProbeCosineTracker:
    r"""What drives kappa-delta, per step: on the same sphere of probes, the mean cosines with the
    outward normal ``n`` of the conditional prediction, the unconditional prediction and their gap,
    ``[3, S]`` = (:math:`\cos(\epsilon_c, n)`, :math:`\cos(\epsilon_u, n)`, :math:`\cos(\epsilon_c - \epsilon_u, n)`).

    Around a basin that a branch has learned, its prediction points outwards (the noise it removes),
    so its cosine is near 1. kappa-delta is minus the gap's cosine: it falls (reads as memorization)
    when the conditional branch points outwards more than the unconditional one, and rises when the
    unconditional branch has learned the basin as well (:func:`~memgeo.detect.branch_diagnostic`).
    """

    def __init__(self, n_directions: int = 4, *, generator: torch.Generator | None = None, relative_floor: float = 1e-6):
        self.n_directions = check_int("n_directions", n_directions, minimum=1)
        self.relative_floor = relative_floor
        self.evals_per_step = 2 * self.n_directions
        self.generator = generator

    def __call__(self, model, state: StepState) -> torch.Tensor:
        n, eps_u, eps_c = _probe_sphere(model, state, self.n_directions, self.generator)
        scale = torch.maximum(eps_c.norm(dim=-1), eps_u.norm(dim=-1))
        cos = [(_unit(v, scale, self.relative_floor) * n).sum(-1).mean(0) for v in (eps_c, eps_u, eps_c - eps_u)]
        return torch.stack(cos)


class _LatentRecorder:
    """Records ``x_t`` at every step (no evaluations); returns zeros."""

    evals_per_step = 0

    def __init__(self):
        self.latents: list[torch.Tensor] = []

    def __call__(self, model, state: StepState) -> torch.Tensor:
        self.latents.append(state.x)
        return torch.zeros(state.x.shape[0], dtype=state.x.dtype)


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
    preset: str = "memgeo",
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    n_directions: int | None = None,
    geometry: str | None = None,
    step: int | None = None,
    track_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""kappa-delta tracked along generation (Brokman et al., NeurReps 2025).

    memgeo preset (``geometry="memgeo"``): DDIM with :class:`KappaDeltaTracker` at every step (4
    directions): the mean cosine of the gap field with the outward normal on a sphere of radius
    :math:`\sigma_t\sqrt d` around :math:`\alpha_t\hat x_0` at each step's own timestep. The signal is
    the plain mean of the per-step values over the first ``track_steps`` steps (all by default), each
    step weighted alike, or the value at ``step``. Memorized prompts pull trajectories into a basin
    where the gap field converges: ``score = -value``.

    official preset (``geometry="official"``, the released code): the released run (500 steps of SD
    v1.4's PNDM scheduler) saves the latent after steps ``probe_steps`` = 1, 50, 100, ..., 500 and
    probes each with the step *index* i passed as the timestep: the mean cosine
    :math:`\frac1n\sum_j \cos(\Delta\epsilon(c + r n_j), n_j)` of the raw gap field with 16
    directions, centre :math:`c = \sqrt{\bar\alpha_i}\,x_{after\ i}`, radius :math:`\sqrt{1-\bar\alpha_i}\sqrt d`.
    memgeo's ``n_steps``-step DDIM run stands in for the 500-step run: released step i is read at
    the same fraction of the generation, the latent after step ``round((i + 1) n / 501) - 1`` (both
    samplers integrate the same probability-flow ODE; the probe times t = i are the released ones
    whatever ``n_steps``). The decode/re-encode through the VAE is skipped on a VAE-free model. No
    average over steps: the value is the one at released step ``step`` (500 by default, the finished
    latent); every probed step is in ``extras["trace"]``. The gap points out of a basin, so
    ``score = value``.

    ``extras``: ``"trace"`` ``[probes, S]`` (every step for memgeo, the probed ones for official),
    ``"trace_t"`` the timestep each row probed at, ``"trace_step"`` the sampler step each row read,
    and the guidance norm at every sampler step (``"guidance_norm_trace"``).
    """
    opts = resolve("kappa_delta", preset, n_directions=n_directions, geometry=geometry, step=step)
    n_dir = check_int("n_directions", opts["n_directions"], minimum=1)
    n_steps = check_int("n_steps", n_steps)
    if opts["geometry"] == "memgeo":
        tracker = KappaDeltaTracker(n_dir, generator=generator)
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"kappa_delta": tracker, "guidance_norm": GuidanceNormTracker()})
        trace, n_evals, sign = res.trace["kappa_delta"], res.n_evals, -1.0
        rows = list(range(n_steps))
        trace_t = [int(t) for t in res.timesteps]
    elif opts["geometry"] == "official":
        rec = _LatentRecorder()
        res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"latent": rec, "guidance_norm": GuidanceNormTracker()})
        after = rec.latents[1:] + [res.x0]  # the latent after step j
        released = opts["released_steps"]
        trace_t = [int(i) for i in opts["probe_steps"]]
        rows = [min(max(round((i + 1) * n_steps / (released + 1)) - 1, 0), n_steps - 1) for i in trace_t]
        d = math.prod(x_T.shape[1:])
        S = x_T.shape[0]
        values = []
        with torch.no_grad():
            for t, j in zip(trace_t, rows):  # t: the released step index, passed as a timestep

                def gap(z, t=t):
                    eps_u, eps_c = guidance_pair(model, z, t, _repeat_cond(cond, z.shape[0] // S, S))
                    return eps_c - eps_u

                centre = float(model.alpha(t)) * after[j]
                values.append(_mean_cosine_flux(gap, centre, float(model.sigma(t)) * math.sqrt(d), n_dir, 1.0,
                                                generator)[0])
        trace, n_evals, sign = torch.stack(values), res.n_evals + 2 * n_dir * len(trace_t), 1.0
    else:
        raise ValueError(f"geometry must be 'memgeo' or 'official', got {opts['geometry']!r}")
    if opts["step"] is not None:
        i = check_int("step", opts["step"], minimum=0)
        if opts["geometry"] == "official":
            if i not in trace_t:
                raise ValueError(f"step must be one of the released probe steps {trace_t}, got {i}")
            i = trace_t.index(i)
        elif i >= n_steps:
            raise ValueError(f"step must be < n_steps = {n_steps}, got {i}")
        v = trace[i]
    else:
        k = check_int("track_steps", track_steps, minimum=1) if track_steps is not None else len(trace)
        v = trace[:k].mean(0)
    return SignalResult("kappa_delta", sign * v, v, n_evals,
                        extras={"trace": trace, "trace_t": trace_t, "trace_step": rows,
                                "guidance_norm_trace": res.trace["guidance_norm"], "x0": res.denoised})


def _lid(model, cond, x0: torch.Tensor, t: int, method: str, n_probes: int, generator):
    """FLIPD at the clean point :math:`\\alpha_t \\hat x_0` (an :class:`~memgeo.geometry.Estimate`)."""
    sigma = float(model.sigma(t))
    x_t = float(model.alpha(t)) * x0  # the clean point: at a re-noised one E[LID] = d for any law
    field = lambda z: eps_to_score(model.eps(z, t, cond), sigma)  # noqa: E731
    d = math.prod(x0.shape[1:])
    if method == "exact_up_to_3500":
        method = "exact" if d <= 3500 else "hutchinson"
    with torch.no_grad() if method not in ("hutchinson", "exact") else torch.enable_grad():
        return flipd(field, x_t, sigma, method=method, n_probes=n_probes, generator=generator)


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced through ``items`` (all of them when there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def flipd_t0(
    model,
    reference,
    *,
    guidance_scale: float = 7.5,
    n_steps: int = 50,
    n_reference: int = 16,
    method: str = "hutchinson_fd",
    n_probes: int = 8,
    quantile: float = 0.9,
    seed: int = 0,
) -> int:
    r"""FLIPD's probe time for the model at hand, from its LID-versus-t curve on the prompts being scanned.

    ``reference``: the conditions to be scored (the scanned prompts; no labels are read), or unlabelled
    prompts of the same kind. They must come from the model's own caption distribution: text outside
    it (random letters, say) generates samples of another kind, whose curve says nothing about the
    scanned ones (on the testbed such prompts chose t = 1, where the scanned samples' LID exceeds d).
    Up to ``n_reference`` of them, evenly spaced, are generated once each as the signal generates
    (CFG DDIM at ``guidance_scale``); their LIDs are evaluated at the DDIM timesteps of the lower half
    of the schedule, smallest first. At too small a t the network does not resolve the noise around
    guided samples and the estimate leaves its valid range (LID > d); t0 is the smallest timestep
    at which the ``quantile`` of the reference LIDs is at most the ambient dimension d. Cached on the
    model per setting; its evaluations are not part of any signal's per-sample cost.
    """
    from .sampling import initial_noise

    reference = _spread(list(reference), check_int("n_reference", n_reference))
    if not reference:
        raise ValueError("reference must hold at least one condition (it is empty)")
    key = ("flipd_t0", tuple(map(str, reference)), guidance_scale, n_steps, method, n_probes, quantile, seed)
    cache = model.__dict__.setdefault("_memgeo_cache", {})
    if key in cache:
        return cache[key]
    x0 = [ddim_sample(model, c, initial_noise(model, [1000 + seed + i]), n_steps=n_steps,
                      guidance_scale=guidance_scale).denoised for i, c in enumerate(reference)]
    d = math.prod(x0[0].shape[1:])
    T = model.schedule.num_train_timesteps if hasattr(model, "schedule") else None
    ts = sorted(int(t) for t in model.timesteps(n_steps))
    ts = [t for t in ts if t <= T // 2] if T else ts[: max(1, len(ts) // 2)]
    chosen = ts[-1]
    for t in ts:
        lid = torch.cat([_lid(model, c, x, t, method, n_probes, torch.Generator().manual_seed(seed)).value
                         for c, x in zip(reference, x0)])
        if bool(torch.isfinite(lid).all()) and float(torch.quantile(lid.double(), quantile)) <= d:
            chosen = t
            break
    cache[key] = chosen
    return chosen


def flipd_signal(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    preset: str = "memgeo",
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    t=None,
    reference=None,
    n_probes: int | None = None,
    method: str | None = None,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SignalResult:
    r"""FLIPD local intrinsic dimension of a generated sample (Kamkari et al. 2024; Ross et al. 2025).

    :math:`\mathrm{LID} = d + \sigma_t^2(\operatorname{tr}\nabla s + |s|^2)` of the conditional score of
    :math:`p_t` at the generated sample scaled to :math:`\alpha_t \hat x_0` without added noise (at a
    sample of :math:`p_t` itself the expectation is d for every law, since
    :math:`E[\Delta\log p + |\nabla\log p|^2] = 0`). ``t="auto"`` (both presets) takes the probe time
    from the model's own LID-versus-t curve on ``reference`` (:func:`flipd_t0`): pass the whole set of
    prompts being compared, so that all are probed at one t; by default the condition of this call.
    An integer fixes it. The trace by ``method``: central-difference Hutchinson with ``n_probes``
    probes (memgeo preset), or the exact trace for d <= 3500 and JVP-Hutchinson above
    (``"exact_up_to_3500"``, official). Memorized samples have low LID, so ``score = -LID``. An LID
    above d is outside the estimator's valid range: it is flagged in ``extras["above_ambient"]`` and
    warned about.
    """
    opts = resolve("flipd", preset, t=t, n_probes=n_probes, method=method)
    cost = 0
    if x0 is None:
        x0, cost = _generate(model, cond, x_T, n_steps, guidance_scale)
    t = opts["t"]
    if t == "auto":
        if reference is None:
            reference = list(cond) if isinstance(cond, (list, tuple)) else [cond]
        t = flipd_t0(model, reference, guidance_scale=guidance_scale, n_steps=n_steps, method=opts["method"])
    elif isinstance(t, str):
        raise ValueError(f"t must be 'auto' or an integer timestep, got {t!r}")
    t = int(t)
    est = _lid(model, cond, x0, t, opts["method"], check_int("n_probes", opts["n_probes"], minimum=2), generator)
    d = math.prod(x0.shape[1:])
    above = est.value > d
    if bool(above.any()):
        warnings.warn(f"FLIPD at t = {t} is above the ambient dimension d = {d} for {int(above.sum())} of "
                      f"{above.numel()} samples: the network does not resolve this noise level; use a larger t "
                      f"(t='auto' chooses one from the model's LID curve)", stacklevel=2)
    return SignalResult("flipd", -est.value, est.value, cost + est.n_evals, est.n_jvps,
                        extras={"stderr": est.stderr, "t": t, "above_ambient": above})


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
GUIDED_SIGNALS = ("guidance_norm",) + GENERATION_SIGNALS  # signals that take guidance_scale (CFG generation)

SIGNALS = {
    "guidance_norm": guidance_norm,
    "anisotropy": anisotropy,
    "sharpness": sharpness,
    "p_laplace": p_laplace_flux,
    "kappa_delta": kappa_delta,
    "flipd": flipd_signal,
}
