"""Stable Diffusion (diffusers) checkpoints as score models, and an offline tiny pipeline.

Importing this subpackage imports diffusers lazily: ``import memgeo`` never does.
"""

from .model import DiffusersScoreModel, schedule_from_config
from .tiny import build_tiny_pipeline

__all__ = ["DiffusersScoreModel", "schedule_from_config", "build_tiny_pipeline"]
