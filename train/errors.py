"""Errors of the training stage; all derive from the project-wide LoraSmithError."""

from data.errors import DatasetError, LoraSmithError
from data.typed_config import ConfigError
from inference.models.errors import ModelLoadError

__all__ = ["ConfigError", "DatasetError", "LoraSmithError", "ModelLoadError"]
