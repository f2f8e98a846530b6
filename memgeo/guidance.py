"""The guidance gap and the quantities built on it, written once.

Classifier-free guidance mixes two predictions, ``eps_cfg = eps_u + w (eps_c - eps_u)``; the gap
``d_eps = eps_c - eps_u`` is ``-sigma_t`` times the score of ``p_t(c | x)`` (docs/conventions.md,
section 2). Detection (guidance norm, anisotropy, sharpness, kappa-delta), mitigation (embedding
adaptation, noise optimization, steering) and explanation (token attribution) all read it through
the functions here.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from .geometry import jvp
from .parameterization import from_eps

__all__ = ["ANISOTROPY_WEIGHTS", "OBJECTIVES", "GapObjective", "ObjectiveTimes", "objective_times", "gap_objective", "timestep_value", "first_timestep",
    "sample_norm", "guidance_pair", "guidance_gap", "gap_norm", "gap_sharpness", "gap_sharpness_field",
    "raw_prediction", "guidance_alignment", "anisotropy_weights", "anisotropy_terms", "combined_score"]


#: (g_norm, g_cos, d_ref): the anisotropy weights published for a model family and the latent size they
#: were tuned at (SD v1: 4x64x64; SD v2: 4x96x96).
ANISOTROPY_WEIGHTS = {"sd1": (1.0, 2.0, 4 * 64 * 64), "sd2": (1.0, 0.1, 4 * 96 * 96)}


def timestep_value(t):
    """A timestep as a Python number: an int where it is integral (VP models), else a float (flow models)."""
    v = t.item() if isinstance(t, torch.Tensor) else t
    return int(v) if float(v).is_integer() else float(v)


def first_timestep(model, n_steps: int):
    """The first timestep of the ``n_steps``-step sampler at which the condition can act: the first, unless it is
    pure noise (``alpha_t = 0``, a flow model's first step, where ``eps_c = eps_u``), then the second."""
    ts = model.timesteps(n_steps)
    first = timestep_value(ts[0])
    return timestep_value(ts[1]) if float(model.alpha(first)) == 0.0 and len(ts) > 1 else first


def sample_norm(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each row of a batch ``[S, ...] -> [S]``."""
    return v.flatten(1).norm(dim=-1)


def guidance_pair(model, x: torch.Tensor, t, cond):
    """``(eps_u, eps_c)``: one batched call where the model offers ``eps_pair``, else two calls."""
    if hasattr(model, "eps_pair"):
        return model.eps_pair(x, t, cond)
    return model.eps(x, t, None), model.eps(x, t, cond)


def guidance_gap(model, x: torch.Tensor, t, cond) -> torch.Tensor:
    """The guidance gap ``d_eps = eps_c - eps_u`` at ``x``, ``t`` ``[S, *event]`` (one batched call where possible)."""
    eps_u, eps_c = guidance_pair(model, x, t, cond)
    return eps_c - eps_u


def gap_norm(model, x: torch.Tensor, t, cond) -> torch.Tensor:
    """``|eps_c - eps_u|`` per sample ``[S]`` (Wen et al., ICLR 2024): differentiable in ``x`` and ``cond``."""
    return sample_norm(guidance_gap(model, x, t, cond))


def gap_sharpness(model, x: torch.Tensor, t, cond) -> torch.Tensor:
    r"""Sharpness (Jeon et al., ICML 2025): :math:`\|(H_c - H_u)\, s_\delta\| = \|J_{\Delta\epsilon}\Delta\epsilon\| / \sigma_t^2`
    per sample ``[S]``, with :math:`s_\delta = -\Delta\epsilon/\sigma_t`: the gap, and one JVP through the
    batched branches. Differentiable in ``x``."""
    return sample_norm(gap_sharpness_field(model, x, t, cond))


def gap_sharpness_field(model, x: torch.Tensor, t, cond, *, step: float | None = None) -> torch.Tensor:
    r"""The field whose norm is the sharpness, :math:`J_{\Delta\epsilon}(x)\,\Delta\epsilon(x) / \sigma_t^2`
    ``[S, *event]``, per coordinate (so that a region's share can be read).

    ``step=None``: one JVP through the batched branches (exact; differentiable in ``x``). ``step=h``: a forward
    difference along the gap's direction, :math:`(\Delta\epsilon(x + h\sigma_t u) - \Delta\epsilon(x))
    \,|\Delta\epsilon| / (h \sigma_t)` with :math:`u = \Delta\epsilon/|\Delta\epsilon|`: two more plain
    evaluations instead of a JVP (no forward-mode pass, any attention kernel), error :math:`O(h)`.
    """
    sigma = float(model.sigma(t))

    def gap(z):
        return guidance_gap(model, z, t, cond)

    if step is None:
        _, Jd = jvp(gap, x, gap(x))
        return Jd / sigma**2
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number (a fraction of sigma_t) or None (a JVP), got {step!r}")
    d = gap(x)
    n = sample_norm(d).reshape(-1, *([1] * (d.dim() - 1)))
    u = d / n.clamp_min(torch.finfo(d.dtype).tiny)
    h = step * sigma
    return (gap(x + h * u) - d) * n / (h * sigma**2)


def raw_prediction(model, eps: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """The model's own output (eps, v or x0) recovered from its eps prediction at ``x``, ``t``."""
    kind = getattr(model, "prediction_type", "epsilon")
    return eps if kind == "epsilon" else from_eps(eps, x, float(model.alpha(t)), float(model.sigma(t)), kind)


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


def anisotropy_weights(weights, model) -> tuple[float, float, int | None]:
    """``(g_norm, g_cos, d_ref)`` from ``"auto"`` (by the model's prediction type: epsilon -> ``"sd1"``,
    v-prediction -> ``"sd2"``), a family name, or explicit ``(g_norm, g_cos)`` (no reference size)."""
    if isinstance(weights, str):
        if weights == "auto":
            weights = "sd2" if getattr(model, "prediction_type", "epsilon") == "v_prediction" else "sd1"
        if weights not in ANISOTROPY_WEIGHTS:
            raise ValueError(f"weights must be 'auto', one of {sorted(ANISOTROPY_WEIGHTS)} or (g_norm, g_cos), got {weights!r}")
        return ANISOTROPY_WEIGHTS[weights]
    try:
        g_norm, g_cos = (float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be 'auto', one of {sorted(ANISOTROPY_WEIGHTS)} or (g_norm, g_cos), "
                         f"got {weights!r}") from None
    return g_norm, g_cos, None


def anisotropy_terms(model, x_T: torch.Tensor, cond, t_hi: int, t_lo: int, opts: dict):
    """The anisotropy combination and its terms ``(value, norm, cos, (g_norm, g_cos))`` under ``opts``
    (``weights``, ``norm``, ``space``: see :func:`anisotropy`), differentiable in ``x_T`` and ``cond``."""
    g_norm, g_cos, d_ref = anisotropy_weights(opts["weights"], model)
    if opts["norm"] not in ("reference_size", "raw", "released") or opts["space"] not in ("eps", "prediction"):
        raise ValueError(f"norm must be 'reference_size', 'raw' or 'released' and space 'eps' or 'prediction', "
                         f"got {opts['norm']!r} and {opts['space']!r}")
    eu_hi, ec_hi = guidance_pair(model, x_T, t_hi, cond)
    eu_lo, ec_lo = guidance_pair(model, x_T, t_lo, cond)
    norm_term = sample_norm(ec_hi - eu_hi)
    d = math.prod(x_T.shape[1:])
    if opts["norm"] == "reference_size" and d_ref is not None:
        norm_term = norm_term * math.sqrt(d_ref / d)
    elif opts["norm"] == "released" and getattr(model, "prediction_type", "epsilon") == "v_prediction":
        norm_term = norm_term / float(model.sigma(t_hi)) ** 2  # the released code's score of a v model
    if opts["space"] == "prediction":
        eu_lo, ec_lo = raw_prediction(model, eu_lo, x_T, t_lo), raw_prediction(model, ec_lo, x_T, t_lo)
    cos_term = guidance_alignment(eu_lo, ec_lo - eu_lo)
    return g_norm * norm_term + g_cos * cos_term, norm_term, cos_term, (g_norm, g_cos)


def combined_score(direction: torch.Tensor, magnitude: torch.Tensor, *, reference=None, weights=(1.0, 1.0)) -> torch.Tensor:
    r"""Mid-generation detector combining direction and magnitude (Brokman et al., NeurReps 2025).

    :math:`w_1 z(-\kappa_\delta) + w_2 z(\|\Delta\epsilon\|)`, each standardized by the mean and
    standard deviation of ``reference``: ``(direction_ref, magnitude_ref)`` values (for example
    ordinary prompts), or their statistics ``((mean, std), (mean, std))``; of the inputs themselves
    when no reference is given. A zero standard deviation leaves the deviation in raw units. Works
    per step on traces; the steering policy's criterion is this score.
    """
    ref_d, ref_m = reference if reference is not None else (direction, magnitude)

    def z(v, ref, sign):
        mean, sd = ref if isinstance(ref, tuple) else (ref.mean(), ref.std())
        sd = torch.as_tensor(sd)
        return sign * (v - mean) / torch.where(sd > 0, sd, torch.ones_like(sd))

    return weights[0] * z(direction, ref_d, -1.0) + weights[1] * z(magnitude, ref_m, 1.0)


class ObjectiveTimes(NamedTuple):
    """The timesteps the objectives read for an ``n_steps``-step sampler: the first at which the condition acts, and
    the third-to-last (anisotropy's low-noise alignment). Computed once per model and step count by
    :func:`objective_times`, outside any optimization loop."""

    first: int | float
    low: int | float | None


def objective_times(model, n_steps: int) -> ObjectiveTimes:
    """The :class:`ObjectiveTimes` of ``model``'s ``n_steps``-step sampler (``low`` is None under 3 steps)."""
    ts = model.timesteps(n_steps)
    return ObjectiveTimes(first_timestep(model, n_steps), timestep_value(ts[-3]) if len(ts) >= 3 else None)


class GapObjective(NamedTuple):
    """A differentiable memorization objective on pure noise: ``fn(model, x_T, cond, times, weights) -> [S]``
    (``times``: :func:`objective_times`) and the model evaluations one forward and backward pass of it cost per
    sample."""

    fn: Callable
    evaluations: int
    description: str


def _gap_norm_objective(model, x_T, cond, times, weights):
    return gap_norm(model, x_T, times.first, cond)


def _anisotropy_objective(model, x_T, cond, times, weights):
    # the anisotropy signal's combination, with the raw gap norm, at the first and the third-to-last timesteps
    opts = {"weights": weights, "norm": "raw", "space": "eps"}
    return anisotropy_terms(model, x_T, cond, times.first, times.low, opts)[0]


def _sharpness_objective(model, x_T, cond, times, weights):
    return gap_sharpness(model, x_T, times.first, cond)


#: The memorization objectives mitigation descends and explanation attributes, as data (name -> objective).
OBJECTIVES: dict[str, GapObjective] = {
    "guidance_norm": GapObjective(_gap_norm_objective, 2, "|eps_c - eps_u| at the first timestep (Wen et al. 2024)"),
    "anisotropy": GapObjective(_anisotropy_objective, 4, "the anisotropy combination with the raw gap norm "
                                                         "(Asthana & Belagiannis 2026)"),
    "sharpness": GapObjective(_sharpness_objective, 4, "|J_gap gap| / sigma^2 at the first timestep "
                                                       "(Jeon et al. 2025)"),
}


def gap_objective(model, x_T: torch.Tensor, cond, name: str, times: ObjectiveTimes, weights="auto") -> torch.Tensor:
    """The per-sample objective ``name`` (:data:`OBJECTIVES`) of ``cond`` (a prompt or an embedding) on ``x_T``
    ``[S]`` at ``times`` (:func:`objective_times`), differentiable in both. Callers check ``name`` against the
    objectives they accept before any work."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name].fn(model, x_T, cond, times, weights)
