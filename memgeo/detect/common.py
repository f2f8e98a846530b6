"""What every signal shares: its result, its first timestep, generating a sample, the released mean-cosine estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .._util import draw_rows
from ..guidance import first_timestep as _conditioned_first_timestep
from ..guidance import timestep_value
from ..sampling import ddim_sample, repeat_cond, sphere_directions

__all__ = ["SignalResult", "first_timestep", "renoise", "stacked_eps", "generate_sample", "mean_cosine_on_sphere",
           "check_region_fractions", "region_windows", "region_max"]


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


def first_timestep(model, t, n_steps):
    """``t``, or the first timestep of the model's ``n_steps``-step sampler at which the condition acts
    (:func:`memgeo.guidance.first_timestep`) when ``t`` is None."""
    return _conditioned_first_timestep(model, n_steps) if t is None else timestep_value(t)


def check_region_fractions(window, stride) -> None:
    """Refuse a region ``window`` or ``stride`` outside (0, 1] (fractions of the latent's side)."""
    for name, v in (("window", window), ("stride", stride)):
        if not (isinstance(v, (int, float)) and 0 < v <= 1):
            raise ValueError(f"{name} must be a fraction of the latent's side in (0, 1], got {v!r}")


def region_windows(height: int, width: int, window: float, stride: float) -> list[tuple[slice, slice]]:
    """The square-ish regions of a ``height x width`` grid: sides ``window`` of the grid's (rounded, at least one
    position), starts every ``stride`` of it, the last region flush with the far edge so every position is covered."""
    check_region_fractions(window, stride)

    def starts(n):
        k = max(1, round(window * n))
        step = max(1, round(stride * n))
        s = list(range(0, n - k + 1, step))
        return [(a, a + k) for a in (s if s[-1] == n - k else [*s, n - k])]

    return [(slice(*r), slice(*c)) for r in starts(height) for c in starts(width)]


def region_max(field: torch.Tensor, window: float, stride: float) -> torch.Tensor:
    r"""The largest norm of ``field`` over regions of the latent, scaled to the whole latent ``[S]``.

    ``field`` ``[S, C, H, W]``: per region R (:func:`region_windows`), :math:`\|f_R\|\sqrt{HW/|R|}`, the norm the
    whole latent would have if every position were like R's; the maximum over regions. A field spread evenly gives
    its whole norm; one concentrated in a region is no longer averaged with the rest. Any other event shape
    (a vector) is one region: the whole norm.
    """
    if field.dim() != 4:
        return field.flatten(1).norm(dim=1)
    energy = field.pow(2).sum(1)  # [S, H, W]
    H, W = energy.shape[-2:]
    means = torch.stack([energy[:, r, c].mean((-2, -1)) for r, c in region_windows(H, W, window, stride)], 1)
    return (means.max(1).values * (H * W)).sqrt()


def renoise(model, x0: torch.Tensor, t: int, generator: torch.Generator | None) -> torch.Tensor:
    """``alpha_t x0 + sigma_t eps`` with fresh noise from ``generator`` (drawn in float64, as every seed is)."""
    noise = draw_rows(lambda g, r: torch.randn((r, *x0.shape[1:]), generator=g, dtype=torch.float64), generator,
                      x0.shape[0], 0).to(x0.dtype).to(x0.device)
    return float(model.alpha(t)) * x0 + float(model.sigma(t)) * noise


def stacked_eps(model, t, cond, rows: int):
    """``z -> model.eps(z, t, cond)`` for ``z`` holding stacked copies of a ``rows``-row batch (directions or
    probes around each row), with per-row conditions repeated to match (:func:`memgeo.sampling.repeat_cond`)."""
    return lambda z: model.eps(z, t, repeat_cond(cond, z.shape[0] // rows, rows))


#: Where a post-generation signal probes: the guided sample as generated, projected to the model's data range, or
#: (``"data"``) projected where the model declares a data range and as generated elsewhere (a latent model).
PROBES = ("generated", "projected", "data")


def effective_probe(model, probe: str) -> str:
    """What ``probe`` does on ``model``: ``"projected"`` or ``"generated"`` (``"data"`` resolved by whether the model
    declares a data range)."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if probe == "data":
        return "generated" if getattr(model, "data_range", None) is None else "projected"
    return probe


def probe_point(model, x0: torch.Tensor, probe: str) -> torch.Tensor:
    """The point a post-generation signal probes around: ``x0`` as generated, or (``"projected"``) clamped to the
    model's declared data range (``model.data_range``, e.g. ``(-1, 1)`` for the testbed, whose latents are its
    pixels); a guided sample can leave the data range, where the score measures the overshoot, not the data.
    ``"data"``: projected where the model declares its data range, as generated where it declares none."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    rng = getattr(model, "data_range", None)
    if probe == "generated" or (probe == "data" and rng is None):
        return x0
    if rng is None:
        raise ValueError(f"probe='projected' needs a model that declares its data range (data_range); "
                         f"{type(model).__name__} declares none (a latent model: use probe='generated')")
    return x0.clamp(float(rng[0]), float(rng[1]))


def generate_sample(model, cond, x_T, n_steps, guidance_scale, probe: str = "generated"):
    """``(point, evaluations per sample)``: the CFG DDIM generation a post-generation signal probes around, at the
    ``probe`` point (:func:`probe_point`)."""
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    return probe_point(model, res.denoised, probe), res.n_evals


def mean_cosine_on_sphere(field, center: torch.Tensor, radius: float, n_dir: int, p: float, generator, *,
                          chunk: int = 32):
    r"""The released p-Laplace/kappa-delta estimate: :math:`\frac1n\sum_j \cos(F(c + r n_j), n_j)\,|F|^{p-2}`.

    (For p = 1 the direction-only flux without its d/r factor; for p != 1 the released code scales the
    cosine, not ``F`` itself, by :math:`|F|^{p-2}`.) Returns the mean and its standard error per row.
    """
    S = center.shape[0]
    N = sphere_directions(n_dir, center, generator)  # [n, S, *event]
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
