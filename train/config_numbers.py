"""Every number in a run's config must be finite: a NaN or an infinity passes the range checks (`nan > 0` is
False, so is `nan < 0`) and then trains silently wrong, or stops on a NaN loss that blames the learning rate."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from train.errors import ConfigError

# An optimizer's own argument may mean "unbounded" by infinity: Prodigy's and D-Adaptation's growth_rate=inf.
_UNBOUNDED = "optimizer.args."


def non_finite_keys(value: Any, key: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of each NaN or infinity under `value` (dataclasses, dicts, lists)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(key, value)]
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
    """Refuse the first config value that is NaN or infinite (an optimizer argument may be infinite), naming
    its key."""
    bad = [
        (key, value)
        for key, value in non_finite_keys(cfg)
        if math.isnan(value) or not key.startswith(_UNBOUNDED)
    ]
    if bad:
        key, value = bad[0]
        raise ConfigError(f"{key} is {value}: give a finite number")
