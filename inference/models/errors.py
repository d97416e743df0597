"""The error a base model that cannot be loaded raises: one line naming the file or id and the fix."""

from __future__ import annotations

from data.errors import LoraSmithError


class ModelLoadError(LoraSmithError):
    """A base model, VAE or tokenizer that cannot be found or read."""
