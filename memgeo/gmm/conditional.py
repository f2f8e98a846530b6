r"""Conditional (prompted) Gaussian mixtures implementing the score-model interface.

Condition ``c`` has law :math:`p(x_0 \mid c)`, a :class:`GaussianMixture`; the unconditional law is
the prior-weighted mixture :math:`p(x_0) = \sum_c \pi_c p(x_0 \mid c)`. At timestep ``t`` the
marginals are the noised mixtures (docs/conventions.md, section 2), so ``eps``, ``score`` and their
derivatives are exact: this is the analytic stand-in for a text-to-image diffusion model.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_finite, check_int, check_positive, check_tensor
from .mixture import GaussianMixture
from .schedules import NoiseSchedule, scaled_linear_schedule

__all__ = ["ConditionalGaussianMixture"]


class ConditionalGaussianMixture:
    r"""One Gaussian mixture per condition and a prior over conditions.

    Implements the score-model interface: ``eps(x, t, cond)``, ``score(x, t, cond)``,
    ``alpha(t)``, ``sigma(t)``, ``timesteps(n_steps)``. ``cond`` is ``None`` (unconditional),
    an ``int`` condition index, an integer tensor / sequence of shape ``[B]`` giving one
    condition per row of ``x``, or a floating tensor of logits ``[C]`` - a *soft condition*, the
    law :math:`\sum_c \mathrm{softmax}(\ell)_c\, p(x_0 \mid c)`, differentiable in the logits (the
    mixture's analogue of a prompt embedding; see :meth:`condition_embedding`).
    ``t`` is an integer timestep or an integer tensor of shape ``[B]``.

    Args:
        conditionals: the laws ``p(x_0 | c)``, all of the same dimension and dtype.
        prior: prior ``pi_c`` over conditions, shape ``[C]`` (uniform if omitted).
        schedule: noise schedule (Stable Diffusion's scaled-linear VP schedule if omitted).
        names: a name per condition.
        memorized: optional ground-truth flag per condition (True = memorized).
    """

    prediction_type = "epsilon"

    def __init__(
        self,
        conditionals: Sequence[GaussianMixture],
        prior=None,
        *,
        schedule: NoiseSchedule | None = None,
        names: Sequence[str] | None = None,
        memorized: Sequence[bool] | None = None,
    ):
        conditionals = list(conditionals)
        if not conditionals or not all(isinstance(m, GaussianMixture) for m in conditionals):
            raise ValueError("conditionals must be a non-empty sequence of GaussianMixture")
        C = len(conditionals)
        ref = conditionals[0]
        if any(m.dim != ref.dim or m.dtype != ref.dtype for m in conditionals):
            raise ValueError("conditionals must all have the same dim and dtype")
        if prior is None:
            prior = torch.full((C,), 1.0 / C, dtype=ref.dtype)
        self.conditionals = conditionals
        self.unconditional = GaussianMixture.concatenate(conditionals, prior)  # validates prior
        self.prior = torch.as_tensor(prior, dtype=ref.dtype, device=ref.device)
        self.schedule = schedule if schedule is not None else scaled_linear_schedule()
        self.names = list(names) if names is not None else [f"c{i}" for i in range(C)]
        if len(self.names) != C:
            raise ValueError(f"names must have {C} entries, got {len(self.names)}")
        if memorized is not None:
            memorized = torch.as_tensor(list(memorized), dtype=torch.bool)
            if memorized.shape != (C,):
                raise ValueError(f"memorized must have {C} entries, got {tuple(memorized.shape)}")
        self.memorized = memorized

    # ------------------------------------------------------------------ interface basics
    @property
    def n_conditions(self) -> int:
        return len(self.conditionals)

    @property
    def dim(self) -> int:
        return self.unconditional.dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def dtype(self) -> torch.dtype:
        return self.unconditional.dtype

    def alpha(self, t) -> torch.Tensor:
        return self.schedule.alpha(t)

    def sigma(self, t) -> torch.Tensor:
        return self.schedule.sigma(t)

    def timesteps(self, n_steps: int) -> torch.Tensor:
        return self.schedule.timesteps(n_steps)

    def data_law(self, cond=None) -> GaussianMixture:
        """``p(x_0 | cond)`` (``cond = None``: the unconditional law; logits: a soft condition)."""
        if cond is None:
            return self.unconditional
        if isinstance(cond, torch.Tensor) and cond.is_floating_point():
            if cond.shape != (self.n_conditions,):
                raise ValueError(f"a soft condition must be logits of shape [{self.n_conditions}], got {tuple(cond.shape)}")
            return GaussianMixture.concatenate(self.conditionals, torch.softmax(cond.to(self.dtype), -1))
        return self.conditionals[self._check_cond_index(cond)]

    def condition_embedding(self, cond: int, *, smoothing: float = 1e-3) -> torch.Tensor:
        """Logits ``[C]`` of the soft condition that puts ``1 - smoothing`` of its weight on ``cond``."""
        c = self._check_cond_index(cond)
        w = torch.full((self.n_conditions,), smoothing / self.n_conditions, dtype=self.dtype)
        w[c] += 1.0 - smoothing
        return w.log()

    def marginal(self, t, cond=None) -> GaussianMixture:
        """``p_t(x | cond)``: the data law noised with ``alpha_t``, ``sigma_t``."""
        return self.data_law(cond).noised(self.alpha(t), self.sigma(t))

    def _check_cond_index(self, c) -> int:
        c = check_int("cond", int(c) if isinstance(c, torch.Tensor) else c, minimum=0)
        if c >= self.n_conditions:
            raise ValueError(f"cond must be None or a condition index in [0, {self.n_conditions - 1}], got {c}")
        return c

    # ------------------------------------------------------------------ batched evaluation
    def _rows(self, x: torch.Tensor, t, cond):
        """Group the rows of x by (timestep, condition); yields (row mask or None, t, cond)."""
        B = x.shape[0]
        t_rows = torch.as_tensor(t).reshape(-1)
        if t_rows.numel() not in (1, B):
            raise ValueError(f"t must be a scalar timestep or have shape [B] = [{B}], got {tuple(t_rows.shape)}")
        if isinstance(cond, torch.Tensor) and cond.is_floating_point():
            if t_rows.numel() != 1:
                raise ValueError("a soft condition (logits) needs a scalar timestep t")
            yield None, t_rows[0], cond
            return
        if cond is None or isinstance(cond, int):
            c_rows = torch.tensor([-1 if cond is None else cond])
        else:
            c_rows = torch.as_tensor(cond).reshape(-1)
            if c_rows.is_floating_point() or c_rows.numel() not in (1, B):
                raise ValueError(f"cond must be None, an int, or integers of shape [B] = [{B}], got {cond!r}")
        if t_rows.numel() == 1 and c_rows.numel() == 1:
            c0 = int(c_rows[0])
            yield None, t_rows[0], (None if c0 < 0 else c0)
            return
        t_rows, c_rows = t_rows.expand(B), c_rows.expand(B)
        for key in torch.unique(torch.stack([t_rows, c_rows], dim=1), dim=0):
            mask = (t_rows == key[0]) & (c_rows == key[1])
            yield mask, key[0], (None if int(key[1]) < 0 else int(key[1]))

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, min_dim=2, dtype=self.dtype)
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        return check_finite("x", x)

    def score(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        r"""Exact score :math:`\nabla_x \log p_t(x \mid c)`, shape ``[B, d]``."""
        x = self._check_x(x)
        out = torch.empty_like(x)
        for mask, tv, c in self._rows(x, t, cond):
            law = self.marginal(tv, c)
            if mask is None:
                return law.score(x)
            out[mask] = law.score(x[mask])
        return out

    def score_and_hessian(self, x: torch.Tensor, t, cond=None):
        """Exact score ``[B, d]`` and Hessian ``[B, d, d]`` of ``log p_t(x | c)``."""
        x = self._check_x(x)
        s = torch.empty_like(x)
        H = x.new_empty(x.shape + (self.dim,))
        for mask, tv, c in self._rows(x, t, cond):
            law = self.marginal(tv, c)
            if mask is None:
                return law.score_and_hessian(x)
            s[mask], H[mask] = law.score_and_hessian(x[mask])
        return s, H

    def _sigma_rows(self, x: torch.Tensor, t) -> torch.Tensor:
        sig = self.sigma(t).to(x.dtype).reshape(-1)
        return sig.reshape((-1,) + (1,) * (x.dim() - 1))  # broadcast over the event

    def eps(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        r"""Exact noise prediction :math:`\epsilon = -\sigma_t \nabla \log p_t(x \mid c)`, shape ``[B, d]``."""
        return -self._sigma_rows(x, t) * self.score(x, t, cond)

    def sample(self, n: int, cond=None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples of ``p_0(x | cond)``, shape ``[n, d]``."""
        return self.data_law(cond).sample(n, generator=generator)

    def __repr__(self) -> str:
        return f"ConditionalGaussianMixture(C={self.n_conditions}, dim={self.dim}, schedule={self.schedule.kind})"

    # ------------------------------------------------------------------ canonical scenario
    @classmethod
    def memorization_scenario(
        cls,
        *,
        dim: int = 8,
        n_memorized: int = 4,
        n_generalizing: int = 4,
        memorized_variance: float = 1e-4,
        generalizing_modes: int = 3,
        generalizing_variance: tuple[float, float] = (0.3, 1.0),
        spread: float = 1.5,
        seed: int = 0,
        schedule: NoiseSchedule | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> "ConditionalGaussianMixture":
        r"""The canonical memorization mixture.

        * ``n_memorized`` memorized conditions: each law is a single nearly degenerate
          component :math:`N(x_m, \epsilon I)` (``epsilon = memorized_variance``) on its own
          training point :math:`x_m` - a duplicated training image. Since the unconditional
          law contains that component, :math:`x_m` is also a (sharp) mode of :math:`p(x_0)`.
        * ``n_generalizing`` generalizing conditions: broad laws, each a mixture of
          ``generalizing_modes`` diagonal Gaussians with variances drawn from
          ``generalizing_variance``.

        All means are drawn from :math:`N(0, \text{spread}^2 I)` with ``seed``; the prior is uniform.
        """
        dim = check_int("dim", dim)
        n_memorized = check_int("n_memorized", n_memorized, minimum=0)
        n_generalizing = check_int("n_generalizing", n_generalizing, minimum=0)
        if n_memorized + n_generalizing == 0:
            raise ValueError("n_memorized + n_generalizing must be >= 1")
        check_positive("memorized_variance", memorized_variance)
        M = check_int("generalizing_modes", generalizing_modes)
        lo, hi = (check_positive("generalizing_variance", v) for v in generalizing_variance)
        if hi < lo:
            raise ValueError(f"generalizing_variance must be (low, high) with low <= high, got {generalizing_variance}")
        gen = torch.Generator().manual_seed(seed)
        laws, names, flags = [], [], []
        for i in range(n_memorized):
            x_m = spread * torch.randn(1, dim, generator=gen, dtype=dtype)  # a training point
            laws.append(GaussianMixture(torch.ones(1), x_m, torch.full((1, dim), memorized_variance), dtype=dtype))
            names.append(f"memorized-{i}")
            flags.append(True)
        for i in range(n_generalizing):
            means = spread * torch.randn(M, dim, generator=gen, dtype=dtype)
            var = lo + (hi - lo) * torch.rand(M, dim, generator=gen, dtype=dtype)
            laws.append(GaussianMixture(torch.full((M,), 1.0 / M), means, var, dtype=dtype))
            names.append(f"generalizing-{i}")
            flags.append(False)
        return cls(laws, schedule=schedule, names=names, memorized=flags)
