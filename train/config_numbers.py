"""Every number in a run's config must be finite: a NaN or an infinity passes the range checks (`nan > 0` is
False, so is `nan < 0`) and then trains silently wrong, or stops on a NaN loss that blames the learning rate."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from train.errors import ConfigError


def non_finite_keys(value: Any, key: str = "") -> list[str]:
    """The dotted keys under `value` (dataclasses, dicts, lists) that hold a NaN or an infinity."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [key]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        fields = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        fields = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return []
    found = []
    for name, item in fields:
        path = f"{key}{name}" if name.startswith("[") or not key else f"{key}.{name}"
        found += non_finite_keys(item, path)
    return found


def check_finite(cfg: Any) -> None:
    """Refuse the first config value that is NaN or infinite, naming its key."""
    bad = non_finite_keys(cfg)
    if bad:
        raise ConfigError(f"{bad[0]} is {_value_at(cfg, bad[0])}: give a finite number")


def _value_at(cfg: Any, key: str) -> float:
    value = cfg
    for part in key.replace("[", ".[").split("."):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value
