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

__all__ = ["NoiseSchedule", "FlowMatchSchedule", "scaled_linear_schedule", "linear_schedule", "ve_schedule",
           "ddim_timesteps", "SPACINGS"]


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

    @classmethod
    def from_diffusers_config(cls, config) -> "NoiseSchedule":
        """The float64 VP schedule of a diffusers scheduler config (betas recomputed in float64), its sampler's
        timesteps spaced as the config's ``timestep_spacing`` says (leading, the default, with its ``steps_offset``;
        trailing; linspace)."""
        T = int(config["num_train_timesteps"])
        kind = config.get("beta_schedule", "linear")
        b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        if config.get("trained_betas") is not None:
            betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(b0, b1, T, dtype=torch.float64)
        elif kind == "squaredcos_cap_v2":
            f = lambda i: math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
            betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
        else:
            raise ValueError(f"unsupported beta_schedule {kind!r} in the scheduler config")
        return cls.from_betas(betas, steps_offset=int(config.get("steps_offset", 0)),
                              spacing=config.get("timestep_spacing", "leading"))

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


class FlowMatchSchedule:
    r"""The rectified-flow schedule of a ``FlowMatchEulerDiscreteScheduler``: ``x_t = (1 - s) x_0 + s eps``
    with ``s = t / T`` (``t`` is the network's timestep, ``T = num_train_timesteps``), so ``alpha_t = 1 - t / T``
    and ``sigma_t = t / T``; timesteps are real numbers. :meth:`timesteps` are the scheduler's own (its
    ``shift``, and ``mu`` where it shifts dynamically; diffusers is imported only there)."""

    kind = "flow"
    steps_offset = 0

    def __init__(self, config: dict, *, mu: float | None = None):
        self.config = dict(config)
        self.num_train_timesteps = int(self.config.get("num_train_timesteps", 1000))
        self.mu = mu

    def _check(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > self.num_train_timesteps).any()):
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps}], got {t.tolist()}")
        return t

    def alpha(self, t) -> torch.Tensor:
        return 1.0 - self._check(t) / self.num_train_timesteps

    def sigma(self, t) -> torch.Tensor:
        return self._check(t) / self.num_train_timesteps

    def scheduler(self, n_steps: int):
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(self.config)
        sched.set_timesteps(n_steps, **({"mu": self.mu} if self.mu is not None else {}))
        return sched

    def timesteps(self, n_steps: int) -> torch.Tensor:
        """The scheduler's ``n_steps`` timesteps (float64, descending; the first is pure noise, ``alpha = 0``)."""
        return self.scheduler(n_steps).timesteps.double()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``alpha^2 / (alpha^2 + sigma^2)`` on the scheduler's training grid (for fingerprints)."""
        s = torch.arange(1, self.num_train_timesteps + 1, dtype=torch.float64) / self.num_train_timesteps
        shift = float(self.config.get("shift", 1.0))
        s = shift * s / (1 + (shift - 1) * s)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
