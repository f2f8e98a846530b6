"""Mitigation: generate without copying training data, over the score-model interface.

Three published families, each runnable on a conditional mixture, the testbed or Stable Diffusion:

* :func:`adapt_embedding` - prompt-embedding adaptation (Wen et al., ICLR 2024; Asthana &
  Belagiannis, ICLR 2026): gradient descent on the condition's embedding to reduce a
  differentiable memorization signal (the guidance norm, or the anisotropy signal), stopping at a
  target; generation then uses the adapted embedding.
* :func:`optimize_noise` - initial-noise optimization (Jeon et al., ICML 2025, SAIL): gradient
  descent on ``x_T`` to reduce the sharpness proxy (or the guidance norm) with a penalty that keeps
  ``|x_T|^2`` at its initial value (its Gaussian likelihood level), accepting each latent once its
  proxy falls under a threshold.
* :class:`SteeringPolicy` - mid-generation steering (Brokman et al., NeurReps 2025): a sampler
  policy that watches the direction (kappa-delta) and magnitude (guidance norm) of the guidance
  gap and, once their combined criterion crosses a threshold, lowers the guidance scale (or
  switches to an adapted embedding) for that sample, leaving ordinary prompts untouched.
* :class:`BasinPolicy` - guidance outside the attraction basin (Jain et al., CVPR 2025): weak or opposite guidance
  until the guidance gap's norm turns (its first local minimum), full guidance after; no extra evaluation.

A model's condition embedding is ``model.condition_embedding(cond)``: prompt embeddings ``[L, D]``
for a diffusers model, logits over conditions ``[C]`` for a mixture (a soft condition).
"""

from .basin import BasinPolicy, basin_exit
from .calibrate import reference_level
from .embedding import (
    AdaptedEmbedding,
    adapt_embedding,
    condition_embedding,
    ADAPT_OBJECTIVES,
)
from .generate import METHODS, Generation, generate
from .methods import MethodSpec, Request
from .noise import NOISE_OBJECTIVES, NoiseOptimization, optimize_noise
from .presets import PRESETS
from .steering import SteeringPolicy, SteeringReference, calibrate_steering

__all__ = [
    "condition_embedding", "ADAPT_OBJECTIVES", "NOISE_OBJECTIVES", "PRESETS", "AdaptedEmbedding", "adapt_embedding", "NoiseOptimization",
    "optimize_noise", "SteeringReference", "calibrate_steering", "SteeringPolicy", "METHODS", "MethodSpec", "Request",
    "Generation", "generate",
    "BasinPolicy", "basin_exit", "reference_level",
]
