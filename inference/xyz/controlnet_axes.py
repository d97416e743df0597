"""The ControlNet extension's X/Y/Z axes ("[ControlNet] Weight", "Guidance Start", "Guidance End",
"Control Mode"): a value applies to every unit of the cell, as the extension's scalar script values do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from inference.controlnet import CONTROL_MODES
from inference.xyz.cell import Cell, XYZError


def unit_field(name: str) -> Callable[[Cell, Any, list], None]:
    """An axis `apply` that sets `name` on every ControlNet unit of the cell."""

    def apply(cell: Cell, value: Any, values: list) -> None:
        cell.controlnet = [replace(unit, **{name: value}) for unit in cell.controlnet]

    return apply


def check_units(label: str, valid: Callable[[Any], bool], expected: str) -> Callable[[list, Cell], None]:
    """An axis `check`: the plot has units, and every value is `valid` (else XYZError saying `expected`)."""

    def check(values: list, cell: Cell) -> None:
        if not cell.controlnet:
            raise XYZError(f"{label} changes ControlNet units: give controlnet=[{{model: ..., image: ...}}]")
        if bad := [value for value in values if not valid(value)]:
            raise XYZError(f"{label}: {bad[0]!r} is not {expected}")

    return check


def _fraction(value: float) -> bool:
    return 0.0 <= value <= 1.0


def _weight(value: float) -> bool:
    return 0.0 <= value <= 2.0


def _mode(value: str) -> bool:
    return value in CONTROL_MODES


CONTROLNET_AXES = [
    ("controlnet_weight", "[ControlNet] Weight", "float", "weight", _weight, "within 0 and 2"),
    (
        "controlnet_start",
        "[ControlNet] Guidance Start",
        "float",
        "guidance_start",
        _fraction,
        "within 0 and 1",
    ),
    ("controlnet_end", "[ControlNet] Guidance End", "float", "guidance_end", _fraction, "within 0 and 1"),
    (
        "controlnet_mode",
        "[ControlNet] Control Mode",
        "str",
        "control_mode",
        _mode,
        " or ".join(CONTROL_MODES),
    ),
]
