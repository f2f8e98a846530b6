"""Analytic Gaussian mixtures: closed-form scores and Hessians, diffusion marginals, schedules,
and conditional mixtures that implement the score-model interface.

The hypothesis strategies live in :mod:`memgeo.gmm.strategies` (imported on demand, since
hypothesis is a test-time dependency).
"""

from .conditional import ConditionalGaussianMixture
from .learned import LearnedScore, train_mlp_score
from .mixture import GaussianMixture
from .schedules import (
    NoiseSchedule,
    ddim_timesteps,
    linear_schedule,
    scaled_linear_schedule,
    ve_schedule,
)

__all__ = [
    "GaussianMixture",
    "ConditionalGaussianMixture",
    "LearnedScore",
    "train_mlp_score",
    "NoiseSchedule",
    "ddim_timesteps",
    "linear_schedule",
    "scaled_linear_schedule",
    "ve_schedule",
]
