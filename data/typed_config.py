"""Hydra's composed config → a typed dataclass, with one-line errors that name the key (every stage uses it)."""

from __future__ import annotations

from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data.errors import LoraSmithError

T = TypeVar("T")


class ConfigError(LoraSmithError):
    """An invalid configuration value."""


def describe(error: OmegaConfBaseException) -> str:
    """One line: the key, what is wrong, and for unknown keys the keys that exist there."""
    message = str(error).strip().splitlines()[0]
    key = getattr(error, "full_key", None) or "?"
    if "missing mandatory value" in message:
        return f"{key} is not set: add {key}=... to the command"
    owner = getattr(error, "object_type", None)
    if owner is not None and "not in" in message and hasattr(owner, "__dataclass_fields__"):
        message += f"; valid keys: {', '.join(owner.__dataclass_fields__)}"
    return f"config key {key}: {message}"


def to_typed(schema: type[T], cfg: DictConfig) -> T:
    """Merge `cfg` into `schema`'s structured config: unknown keys and wrong types become ConfigError."""
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))
    except OmegaConfBaseException as error:
        raise ConfigError(describe(error)) from error
    assert isinstance(typed, schema)
    return typed
