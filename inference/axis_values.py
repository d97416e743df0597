"""X/Y/Z plot axis values as A1111 v1.10.1 reads them: comma lists, ranges, step ranges and counted ranges.

The text is read as CSV (quotes keep commas, lines continue the list) and every item is stripped. For
`int` and `float` axes an item may be a range:

- `1-5` → 1, 2, 3, 4, 5 (the end is included). A descending range needs a step: `5-1` is empty.
- `1-10 (+3)` → 1, 4, 7, 10; the step must carry its sign: `10-1 (-3)` → 10, 7, 4 (int ranges stop before
  `end + 1`, so a descending one stops early).
- `0.0-1.0 [5]` → five evenly spaced values from start to end; for `int` axes each is truncated
  (`1-2 [4]` → 1, 1, 1, 2).
- float ranges are `numpy.arange(start, end + step, step)` (step 1 if none), so they may overshoot:
  `0-1 (+0.3)` → 0, 0.3, 0.6, 0.8999999999999999, 1.2; `5-1` is empty, `1-0 (-0.25)` counts down.

Everything else is converted as Python's `int()` / `float()` would, and a value that does not convert is
an error. A1111's number pattern has an unescaped dot, so any single character may stand for the decimal
point (`1x5-3` reads the start `1x5`, which then fails to convert), and `1e-3` reads as the range
`1e` to `3`: an error, not 0.001.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np

from data.errors import LoraSmithError

KINDS = ("int", "float", "str")

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:.\d*)?"  # the "." matches any character, as in A1111
_INT_STEP = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\[(\d+)\s*])?\s*")
_FLOAT_STEP = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


class AxisValueError(LoraSmithError, ValueError):
    """Axis values that A1111's X/Y/Z plot could not read either."""


def split_values(text: str) -> list[str]:
    """The CSV items of `text`, stripped: `a, "b, c"` keeps its quotes (CSV quotes only start a field)."""
    return [item.strip() for row in csv.reader(io.StringIO(text)) for item in row]


def _int_items(item: str) -> list[int | str]:
    if match := _INT_STEP.fullmatch(item):
        start, end, step = match.groups()
        return list(range(int(start), int(end) + 1, int(step) if step is not None else 1))
    if match := _INT_COUNT.fullmatch(item):
        start, end, count = match.groups()
        spaced = np.linspace(int(start), int(end), int(count) if count is not None else 1)
        return [int(value) for value in spaced.tolist()]
    return [item]


def _float_items(item: str) -> list[float | str]:
    if match := _FLOAT_STEP.fullmatch(item):
        start, end, step = match.groups()
        step_value = float(step) if step is not None else 1.0
        return np.arange(float(start), float(end) + step_value, step_value).tolist()
    if match := _FLOAT_COUNT.fullmatch(item):
        start, end, count = match.groups()
        return np.linspace(float(start), float(end), int(count) if count is not None else 1).tolist()
    return [item]


_EXPANDERS = {"int": _int_items, "float": _float_items, "str": lambda item: [item]}
_CONVERTERS = {"int": int, "float": float, "str": str}


def parse_axis_values(kind: str, text: str) -> list[int] | list[float] | list[str]:
    """The values A1111's X/Y/Z plot makes of `text` for an axis of `kind` ("int", "float" or "str").

    An empty text gives an empty list, as in A1111; an item that is no number (for int/float axes) or a
    range with a zero step raises AxisValueError naming it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown axis value kind {kind!r}; use one of {', '.join(KINDS)}")
    values = []
    for item in split_values(text):
        try:
            values += [_CONVERTERS[kind](value) for value in _EXPANDERS[kind](item)]
        except (ValueError, ZeroDivisionError) as error:
            raise AxisValueError(f"{item!r} is not {_described(kind)} ({error})") from None
    return values


def _described(kind: str) -> str:
    return {"int": "a whole number or range", "float": "a number or range", "str": "text"}[kind]
