"""Score models: the interface every model offers, the diffusers adapter, tiny and full-size builders.

Importing this subpackage imports diffusers lazily: ``import memgeo`` never does.
"""

from .adapter import DiffusersScoreModel, schedule_from_config
from .interface import PromptModel, ScoreModel
from .tiny import build_tiny_pipeline

__all__ = ["ScoreModel", "PromptModel", "DiffusersScoreModel", "schedule_from_config", "build_tiny_pipeline"]
