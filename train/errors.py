"""Errors of the training stage; all derive from the project-wide LoraSmithError."""

from data.errors import DatasetError, LoraSmithError
from data.typed_config import ConfigError


class ModelLoadError(LoraSmithError):
    """A base model that cannot be found or read."""


__all__ = ["ConfigError", "DatasetError", "LoraSmithError", "ModelLoadError"]
