r"""Discrete noise schedules: ``x_t = alpha_t x_0 + sigma_t eps`` (docs/conventions.md, section 2).

* VP (DDPM, Stable Diffusion): ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``,
  ``abar_t = prod_{s <= t} (1 - beta_s)``.
* VE: ``alpha_t = 1`` and a geometric ladder of ``sigma_t``.

Timesteps are integers ``0 .. T-1`` as in diffusers; :meth:`NoiseSchedule.timesteps` gives the
DDIM "leading" spacing with ``steps_offset = 1`` by default (50 steps of a 1000-step schedule give
981, 961, ..., 1), the spacing Stable Diffusion v1 pipelines use, or the scheduler config's
``timestep_spacing`` ("trailing", "linspace") where a checkpoint sets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_finite, check_int, check_positive

__all__ = ["NoiseSchedule", "scaled_linear_schedule", "linear_schedule", "ve_schedule", "ddim_timesteps", "SPACINGS"]


#: Timestep spacings of diffusers' schedulers (``timestep_spacing`` in a scheduler config).
SPACINGS = ("leading", "trailing", "linspace")


def ddim_timesteps(n_steps: int, num_train_timesteps: int = 1000, *, steps_offset: int = 1,
                   spacing: str = "leading") -> torch.Tensor:
    """Sampler timesteps (descending, int64 ``[n_steps]``) as diffusers' ``DDIMScheduler.set_timesteps`` spaces them:
    ``"leading"`` (``k * (T // n) + steps_offset``), ``"trailing"`` (``round(T - k T / n) - 1``, from ``T - 1``) or
    ``"linspace"`` (``round(linspace(0, T - 1, n))``); ``steps_offset`` moves the leading spacing only."""
    import numpy as np

    n_steps = check_int("n_steps", n_steps)
    T = check_int("num_train_timesteps", num_train_timesteps)
    if n_steps > T:
        raise ValueError(f"n_steps must be <= num_train_timesteps = {T}, got {n_steps}")
    if spacing == "leading":
        t = (np.arange(n_steps) * (T // n_steps))[::-1] + steps_offset
    elif spacing == "trailing":
        t = np.round(np.arange(T, 0, -T / n_steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        t = np.linspace(0, T - 1, n_steps).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return torch.from_numpy(np.ascontiguousarray(t)).long()


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete schedule given by ``alpha_t`` and ``sigma_t`` on integer timesteps.

    Attributes:
        alphas: ``alpha_t``, shape ``[T]`` (float64).
        sigmas: ``sigma_t``, shape ``[T]`` (float64).
        kind: ``"vp"`` or ``"ve"``.
        steps_offset: offset of the DDIM leading spacing.
        spacing: how :meth:`timesteps` spaces a sampler's steps (:data:`SPACINGS`, the scheduler config's
            ``timestep_spacing``).
    """

    alphas: torch.Tensor
    sigmas: torch.Tensor
    kind: str = "vp"
    steps_offset: int = 1
    spacing: str = "leading"

    def __post_init__(self):
        if self.alphas.shape != self.sigmas.shape or self.alphas.dim() != 1:
            raise ValueError("alphas and sigmas must be 1-D tensors of the same length")
        check_finite("alphas", self.alphas)
        check_finite("sigmas", self.sigmas)
        if bool((self.sigmas <= 0).any()) or bool((self.alphas <= 0).any()):
            raise ValueError("alphas and sigmas must be > 0 at every timestep")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")

    @classmethod
    def from_betas(cls, betas: torch.Tensor, *, steps_offset: int = 1, spacing: str = "leading") -> "NoiseSchedule":
        """VP schedule with ``abar_t = prod (1 - beta)``."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or bool((betas <= 0).any()) or bool((betas >= 1).any()):
            raise ValueError("betas must be a 1-D tensor with entries in (0, 1)")
        abar = torch.cumprod(1.0 - betas, dim=0)  # abar_t: [T]
        return cls(abar.sqrt(), (1.0 - abar).sqrt(), "vp", steps_offset, spacing)

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas.shape[0]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``abar_t = alpha_t^2`` for VP schedules (``alpha_t^2 / (alpha_t^2 + sigma_t^2)`` in general)."""
        return self.alphas**2 / (self.alphas**2 + self.sigmas**2)

    def _index(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point():
            if not bool((t == t.round()).all()):
                raise ValueError(f"t must hold integer timesteps, got {t}")
            t = t.long()
        if bool((t < 0).any()) or bool((t >= self.num_train_timesteps).any()):
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps - 1}], got {t.tolist()}")
        return t

    def alpha(self, t) -> torch.Tensor:
        """``alpha_t`` at integer timestep(s) ``t`` (float64)."""
        return self.alphas[self._index(t)]

    def sigma(self, t) -> torch.Tensor:
        """``sigma_t`` at integer timestep(s) ``t`` (float64)."""
        return self.sigmas[self._index(t)]

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """Sampler timesteps, descending, in the schedule's spacing (:func:`ddim_timesteps`)."""
        return ddim_timesteps(n_steps, self.num_train_timesteps, steps_offset=self.steps_offset, spacing=self.spacing)


def scaled_linear_schedule(beta_start: float = 0.00085, beta_end: float = 0.012, T: int = 1000) -> NoiseSchedule:
    """Stable Diffusion's schedule: betas linear in sqrt between ``beta_start`` and ``beta_end``."""
    check_positive("beta_start", beta_start)
    check_positive("beta_end", beta_end)
    T = check_int("T", T, minimum=2)
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    return NoiseSchedule.from_betas(betas)


def linear_schedule(beta_start: float = 1e-4, beta_end: float = 0.02, T: int = 1000) -> NoiseSchedule:
    """DDPM's linear betas (Ho et al. 2020)."""
    check_positive("beta_start", beta_start)
    check_positive("beta_end", beta_end)
    T = check_int("T", T, minimum=2)
    return NoiseSchedule.from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def ve_schedule(sigma_min: float = 0.002, sigma_max: float = 80.0, T: int = 1000) -> NoiseSchedule:
    """VE schedule: ``alpha_t = 1`` and ``sigma_t`` geometric from ``sigma_min`` (t = 0) to ``sigma_max``."""
    lo = check_positive("sigma_min", sigma_min)
    hi = check_positive("sigma_max", sigma_max)
    if hi <= lo:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_min} and {sigma_max}")
    T = check_int("T", T, minimum=2)
    sigmas = torch.exp(torch.linspace(math.log(lo), math.log(hi), T, dtype=torch.float64))  # geometric ladder
    return NoiseSchedule(torch.ones(T, dtype=torch.float64), sigmas, "ve")
