"""FLIPD (Kamkari et al. 2024; Ross et al. 2025): local intrinsic dimension of a generated sample."""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch

from .._checks import check_int
from .._util import spread
from ..geometry import flipd
from ..parameterization import eps_to_score
from ..guidance import timestep_value
from .common import SignalResult, effective_probe, generate_sample, stacked_eps
from .settings import FlipdSettings

__all__ = ["flipd_t0", "flipd_probe_time", "flipd_signal", "local_intrinsic_dimension"]


def local_intrinsic_dimension(model, cond, x0: torch.Tensor, t: int, method: str, n_probes: int, generator):
    """FLIPD at the clean point :math:`\\alpha_t \\hat x_0` (an :class:`~memgeo.geometry.Estimate`)."""
    sigma = float(model.sigma(t))
    x_t = float(model.alpha(t)) * x0  # the clean point: at a re-noised one E[LID] = d for any law
    eps = stacked_eps(model, t, cond, x0.shape[0])
    field = lambda z: eps_to_score(eps(z), sigma)  # noqa: E731
    d = math.prod(x0.shape[1:])
    if method == "exact_up_to_3500":
        method = "exact" if d <= 3500 else "hutchinson"
    with torch.no_grad() if method not in ("hutchinson", "exact") else torch.enable_grad():
        return flipd(field, x_t, sigma, method=method, n_probes=n_probes, generator=generator)


def flipd_t0(
    model,
    reference,
    *,
    guidance_scale: float = 7.5,
    n_steps: int = 50,
    n_reference: int = 32,
    method: str = "hutchinson_fd",
    n_probes: int = 8,
    quantile: float = 1.0,
    seed: int = 0,
    probe: str = "generated",
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
    at which the ``quantile`` of the reference LIDs is at most the ambient dimension d. The references are probed
    where the signal probes (``probe``, :func:`~memgeo.detect.common.probe_point`).

    ``quantile=1.0`` (every reference sample within d) with 32 references is a one-sided test that
    at least 90% of the scanned samples are: were 10% of them above d, all 32 would pass with
    probability 0.9^32 = 3%. The 90% quantile of 16 samples, the former rule, accepted t = 1 on the
    testbed, where 21% of the scanned samples lie above d. Cached on the model per setting; its
    evaluations are not part of any signal's per-sample cost.
    """
    from ..sampling import initial_noise

    reference = spread(list(reference), check_int("n_reference", n_reference))
    if not reference:
        raise ValueError("reference must hold at least one condition (it is empty)")
    key = ("flipd_t0", tuple(map(str, reference)), guidance_scale, n_steps, method, n_probes, quantile, seed,
           effective_probe(model, probe))  # one cache entry per point actually probed
    cache = model.__dict__.setdefault("_memgeo_cache", {})
    if key in cache:
        return cache[key]
    x0 = [generate_sample(model, c, initial_noise(model, [1000 + seed + i]), n_steps, guidance_scale, probe)[0]
          for i, c in enumerate(reference)]
    d = math.prod(x0[0].shape[1:])
    T = model.schedule.num_train_timesteps if hasattr(model, "schedule") else None
    ts = sorted(timestep_value(t) for t in model.timesteps(n_steps))
    ts = [t for t in ts if t <= T // 2] if T else ts[: max(1, len(ts) // 2)]
    chosen = ts[-1]
    for t in ts:
        lid = torch.cat([local_intrinsic_dimension(model, c, x, t, method, n_probes,
                                                   torch.Generator().manual_seed(seed)).value
                         for c, x in zip(reference, x0)])
        if bool(torch.isfinite(lid).all()) and float(torch.quantile(lid.double(), quantile)) <= d:
            chosen = t
            break
    cache[key] = chosen
    return chosen


def flipd_probe_time(model, texts, *, preset: str, guidance_scale: float, n_steps: int, options: dict) -> dict:
    """FLIPD's probe time chosen once from ``texts`` (:func:`flipd_t0`, with the settings' trace method and probe
    point) where the settings say ``t = "auto"``, as ``{"t": t}`` (``{}`` where ``t`` is fixed): the one place an
    automatic probe time is resolved, for a scan, a leaderboard (:attr:`~memgeo.detect.SignalSpec.probe_time`) or a
    call of :func:`flipd_signal` alone."""
    known = {f.name for f in dataclasses.fields(FlipdSettings)}
    s = FlipdSettings.resolve(None, preset, **{k: v for k, v in options.items() if k in known})
    if s.t != "auto":
        return {}
    return {"t": flipd_t0(model, list(texts), guidance_scale=guidance_scale, n_steps=n_steps, method=s.method,
                          probe=s.probe)}


def flipd_signal(
    model,
    cond,
    x_T: torch.Tensor,
    settings: FlipdSettings | None = None,
    *,
    preset: str = "memgeo",
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    x0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **options,
) -> SignalResult:
    r"""FLIPD local intrinsic dimension of a generated sample (Kamkari et al. 2024; Ross et al. 2025).

    :math:`\mathrm{LID} = d + \sigma_t^2(\operatorname{tr}\nabla s + |s|^2)` of the conditional score of
    :math:`p_t` at the generated sample scaled to :math:`\alpha_t \hat x_0` without added noise (at a
    sample of :math:`p_t` itself the expectation is d for every law, since
    :math:`E[\Delta\log p + |\nabla\log p|^2] = 0`). ``t="auto"`` (both presets) takes the probe time
    from the model's own LID-versus-t curve on this call's conditions (:func:`flipd_t0`); to probe a set of
    prompts at one t, fix it once from the whole set (``SIGNALS["flipd"].fixed_options``, as the scan and the
    leaderboards do) and pass it. An integer fixes it. The trace by ``method``: central-difference Hutchinson with ``n_probes``
    probes (memgeo preset), or the exact trace for d <= 3500 and JVP-Hutchinson above
    (``"exact_up_to_3500"``, official). Memorized samples have low LID, so ``score = -LID``. An LID
    above d is outside the estimator's valid range: it is flagged in ``extras["above_ambient"]`` and
    warned about. ``probe``: where the generated sample is probed (:func:`~memgeo.detect.common.probe_point`;
    memgeo ``"data"``: clamped to the model's data range where it declares one; official ``"generated"``), the
    automatic probe time read at the same point. The options are the fields of
    :class:`~memgeo.detect.settings.FlipdSettings`: ``settings`` (else the preset ``preset``), each option given as
    a keyword replacing its field.
    """
    s = FlipdSettings.resolve(settings, preset, **options)
    cost = 0
    if x0 is None:
        x0, cost = generate_sample(model, cond, x_T, n_steps, guidance_scale, s.probe)
    t = s.t
    if t == "auto":  # called alone: from this call's conditions, by the one rule the scan and leaderboards use
        conds = list(cond) if isinstance(cond, (list, tuple)) else [cond]
        t = flipd_probe_time(model, conds, preset=preset, guidance_scale=guidance_scale, n_steps=n_steps,
                             options=s.as_options())["t"]
    elif isinstance(t, str):
        raise ValueError(f"t must be 'auto' or an integer timestep, got {t!r}")
    t = timestep_value(t)
    est = local_intrinsic_dimension(model, cond, x0, t, s.method, check_int("n_probes", s.n_probes, minimum=2),
                                    generator)
    d = math.prod(x0.shape[1:])
    above = est.value > d
    if bool(above.any()):
        warnings.warn(f"FLIPD at t = {t} is above the ambient dimension d = {d} for {int(above.sum())} of "
                      f"{above.numel()} samples: the network does not resolve this noise level; use a larger t "
                      f"(t='auto' chooses one from the model's LID curve)", stacklevel=2)
    return SignalResult("flipd", -est.value, est.value, cost + est.n_evals, est.n_jvps,
                        extras={"stderr": est.stderr, "t": t, "above_ambient": above})
