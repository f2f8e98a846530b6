r"""Divergence, p-Laplacian and FLIPD estimators that only call the field (and its JVP/VJP).

Every estimator returns an :class:`Estimate`: value and standard error per point, and the number
of field evaluations, JVPs and VJPs it used per point, so that accuracy per unit of cost can be
compared. The exact computation (``method="exact"``) stands beside each stochastic one.

Methods of :func:`divergence` (docs/conventions.md, section 2):

``"exact"``
    :math:`\operatorname{tr} J` from d Jacobian-vector products (basis vectors; small d).
``"hutchinson"``
    :math:`\frac1n\sum_j v_j^\top J v_j` with Rademacher, Gaussian or spherical probes; one JVP
    (or, with ``derivative="vjp"``, one VJP: :math:`v^\top J v = v^\top (J^\top v)`) per probe.
``"hutchinson_fd"``
    the same with :math:`Jv \approx (F(x+hv) - F(x-hv))/2h`, for fields without autograd; bias O(h^2).
``"flux"``
    boundary flux (divergence theorem) :math:`\frac{d}{r}\,\frac1n\sum_j \langle F(x + r n_j), n_j\rangle`
    with :math:`n_j` uniform on the unit sphere; estimates the ball average of div F (bias O(r^2)).
``"flux_antithetic"``
    antithetic pairs :math:`\frac{d}{2r}\langle F(x+rn_j) - F(x-rn_j), n_j\rangle`: a finite-difference
    Hutchinson estimator with spherical probes; it removes the O(d|F|^2/r^2) variance of ``"flux"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field

import torch

from .._checks import check_int, check_positive
from .._util import draw_rows
from .fields import Field, check_points, flatten_field, jvp, vjp

__all__ = [
    "Estimate",
    "divergence",
    "jacobian",
    "DIVERGENCE_METHODS",
    "P_LAPLACIAN_METHODS",
]

DIVERGENCE_METHODS = ("exact", "hutchinson", "hutchinson_fd", "flux", "flux_antithetic")
P_LAPLACIAN_METHODS = ("exact", "product") + DIVERGENCE_METHODS[1:]
PROBES = ("rademacher", "gaussian", "sphere")


@dataclass(frozen=True)
class Estimate:
    """An estimate per point with its cost.

    Attributes:
        value: the estimate, ``[B]``.
        stderr: its standard error, ``[B]`` (zero for exact methods).
        n_evals: field evaluations per point.
        n_jvps: Jacobian-vector products (forward mode) per point.
        n_vjps: vector-Jacobian products (reverse mode) per point.
        method: the method that produced it.
        samples: the per-probe terms whose mean is ``value``, ``[n, B]`` (None for exact methods).
    """

    value: torch.Tensor
    stderr: torch.Tensor
    n_evals: int
    n_jvps: int = 0
    n_vjps: int = 0
    method: str = ""
    samples: torch.Tensor | None = dc_field(default=None, repr=False)

    def interval(self, level: float = 0.95):
        """Normal-approximation confidence interval ``(low, high)`` at ``level``."""
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        z = math.sqrt(2) * torch.special.erfinv(torch.tensor(level, dtype=torch.float64)).item()
        return self.value - z * self.stderr, self.value + z * self.stderr

    def cost(self, *, jvp_cost: float = 2.0, vjp_cost: float = 2.0) -> float:
        """Cost per point in field-evaluation equivalents (a JVP/VJP counted as ``jvp_cost``/``vjp_cost``)."""
        return self.n_evals + jvp_cost * self.n_jvps + vjp_cost * self.n_vjps


def _mean_estimate(samples: torch.Tensor, method: str, **counts) -> Estimate:
    n = samples.shape[0]
    value = samples.mean(0)
    stderr = samples.std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(value, math.nan)
    return Estimate(value, stderr, method=method, samples=samples, **counts)


def _probes(kind: str, n: int, B: int, d: int, like: torch.Tensor, generator) -> torch.Tensor:
    """Probe vectors ``[n, B, d]``: Rademacher, standard Gaussian, or uniform unit directions."""
    if kind == "rademacher":
        v = draw_rows(lambda g, r: torch.randint(0, 2, (n, r, d), generator=g), generator, B, 1).to(like.dtype) * 2 - 1
    elif kind in ("gaussian", "sphere"):
        v = draw_rows(lambda g, r: torch.randn(n, r, d, generator=g, dtype=like.dtype), generator, B, 1)
        if kind == "sphere":
            v = v / v.norm(dim=-1, keepdim=True)
    else:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    return v.to(like.device)


def _chunks(n: int, chunk_size: int | None):
    step = n if chunk_size is None else check_int("chunk_size", chunk_size)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _repeat(y: torch.Tensor, m: int) -> torch.Tensor:
    return y.unsqueeze(0).expand(m, *y.shape).reshape(m * y.shape[0], -1)  # [m * B, d]


def _directional(f, y, V, derivative: str, h: float | None):
    """``v^T J v`` for each probe in ``V: [m, B, d]``, by JVP, VJP or central differences."""
    m, B, d = V.shape
    Y, Vf = _repeat(y, m), V.reshape(m * B, d)
    F = None
    if derivative == "jvp":
        F, JV = jvp(f, Y, Vf)
    elif derivative == "vjp":
        F, JV = vjp(f, Y, Vf)  # J^T v; v^T (J^T v) = v^T J v
    elif derivative == "fd":
        JV = (f(Y + h * Vf) - f(Y - h * Vf)) / (2 * h)  # NaN or inf in F reaches JV itself
    else:
        raise ValueError(f"derivative must be 'jvp', 'vjp' or 'fd', got {derivative!r}")
    return _nan_where_undefined((JV.reshape(m, B, d) * V).sum(-1), F, m, B)  # [m, B]


def _nan_where_undefined(values: torch.Tensor, F: torch.Tensor | None, m: int, B: int) -> torch.Tensor:
    """NaN for the points where the field's own output is NaN or infinite (its derivative there is no number)."""
    if F is None:
        return values
    bad = ~torch.isfinite(F.reshape(m, B, -1)).all(-1)  # [m, B]
    return torch.where(bad.reshape(bad.shape + (1,) * (values.dim() - 2)), torch.full_like(values, math.nan), values)


def jacobian(field: Field, x: torch.Tensor, *, derivative: str = "jvp", chunk_size: int | None = None) -> torch.Tensor:
    """The full Jacobian ``[B, d, d]`` of the field at each point, from d JVPs (or VJPs) per point."""
    x = check_points(x)
    B, d = x.shape[0], math.prod(x.shape[1:])
    f = flatten_field(field, tuple(x.shape[1:]))
    y = x.reshape(B, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    cols = []
    for a, b in _chunks(d, chunk_size):
        E = eye[a:b][:, None, :].expand(b - a, B, d)  # basis vectors [m, B, d]
        if derivative == "jvp":
            F, JE = jvp(f, _repeat(y, b - a), E.reshape(-1, d))  # J e_i: columns
        elif derivative == "vjp":
            F, JE = vjp(f, _repeat(y, b - a), E.reshape(-1, d))  # J^T e_i: rows
        else:
            raise ValueError(f"derivative must be 'jvp' or 'vjp', got {derivative!r}")
        cols.append(_nan_where_undefined(JE.reshape(b - a, B, d), F, b - a, B))
    J = torch.cat(cols).permute(1, 2, 0)  # [B, d(out), d(in)] for jvp
    return J if derivative == "jvp" else J.transpose(-1, -2)


def _default_h(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float64 else 1e-2  # where central differences agree best with JVPs


def divergence(
    field: Field,
    x: torch.Tensor,
    *,
    method: str = "hutchinson",
    n_probes: int = 64,
    probe: str = "rademacher",
    derivative: str = "jvp",
    h: float | None = None,
    radius: float | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Estimate:
    r"""Divergence :math:`\operatorname{div} F(x) = \operatorname{tr} \nabla F(x)` at each point of ``x: [B, *event]``.

    Args:
        field: batched field ``[B, *event] -> [B, *event]``.
        x: points.
        method: one of ``"exact"``, ``"hutchinson"``, ``"hutchinson_fd"``, ``"flux"``,
            ``"flux_antithetic"`` (see the module docstring).
        n_probes: probes (Hutchinson) or directions (flux; pairs for antithetic flux).
        probe: ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (scaled by sqrt(d)) for Hutchinson.
        derivative: ``"jvp"`` or ``"vjp"`` for ``"hutchinson"`` and ``"exact"``.
        h: finite-difference step for ``"hutchinson_fd"`` (1e-5 in float64, 1e-2 in float32).
        radius: sphere radius for the flux methods (required there).
        generator: random generator for the probes.
        chunk_size: at most this many probes per field call (memory bound).

    Returns:
        :class:`Estimate` with ``value`` and ``stderr`` of shape ``[B]``.
    """
    x = check_points(x)
    if method not in DIVERGENCE_METHODS:
        raise ValueError(f"method must be one of {DIVERGENCE_METHODS}, got {method!r}")
    B, d = x.shape[0], math.prod(x.shape[1:])
    f = flatten_field(field, tuple(x.shape[1:]))
    y = x.reshape(B, d)
    if method == "exact":
        J = jacobian(field, x, derivative=derivative, chunk_size=chunk_size)
        tr = torch.diagonal(J, dim1=-2, dim2=-1).sum(-1)
        counts = {"n_jvps": d} if derivative == "jvp" else {"n_vjps": d}
        return Estimate(tr, torch.zeros_like(tr), n_evals=0, method=method, **counts)

    n = check_int("n_probes", n_probes, minimum=2 if method != "exact" else 1)
    if method in ("hutchinson", "hutchinson_fd"):
        if method == "hutchinson_fd":
            derivative = "fd"
            h = check_positive("h", h if h is not None else _default_h(x.dtype))
        elif derivative not in ("jvp", "vjp"):
            raise ValueError(f"derivative must be 'jvp' or 'vjp' for method='hutchinson', got {derivative!r}")
        V = _probes(probe, n, B, d, y, generator)
        if probe == "sphere":
            V = V * math.sqrt(d)  # E[v v^T] = I
        parts = [_directional(f, y, V[a:b], derivative, h) for a, b in _chunks(n, chunk_size)]
        counts = {"fd": {"n_evals": 2 * n}, "jvp": {"n_evals": 0, "n_jvps": n}, "vjp": {"n_evals": 0, "n_vjps": n}}
        return _mean_estimate(torch.cat(parts), method, **counts[derivative])

    if radius is None:
        raise ValueError(f"radius is required for method={method!r} (the sphere radius r > 0)")
    r = check_positive("radius", radius)
    N = _probes("sphere", n, B, d, y, generator)  # unit directions [n, B, d]
    parts = []
    for a, b in _chunks(n, chunk_size):
        Nc = N[a:b]
        m = b - a
        Y, Nf = _repeat(y, m), Nc.reshape(m * B, d)
        if method == "flux":
            term = (f(Y + r * Nf) * Nf).sum(-1) * (d / r)  # (d/r) <F(x + r n), n>
        else:
            term = ((f(Y + r * Nf) - f(Y - r * Nf)) * Nf).sum(-1) * (d / (2 * r))
        parts.append(term.reshape(m, B))
    n_evals = n if method == "flux" else 2 * n
    return _mean_estimate(torch.cat(parts), method, n_evals=n_evals)
