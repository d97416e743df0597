"""X/Y/Z axis values read as A1111 v1.10.1's `scripts/xyz_grid.py` reads them (`process_axis`).

Each expected value below was worked out by hand from A1111's rules, not from our output: the CSV split
(`csv.reader`, items stripped), the int range `range(start, end + 1, step)`, the float range
`numpy.arange(start, end + step, step)`, the counted range `numpy.linspace(start, end, count)` (truncated
by `int` on int axes), and the final `int()` / `float()` / `str()` of every item.
"""

from __future__ import annotations

import re

import pytest

from data.errors import LoraSmithError
from inference.grid import parse_axis_values

CASES = [
    # kind, text, expected — the A1111 rule each case exercises
    ("int", "1-5", [1, 2, 3, 4, 5]),  # plain range: end included (range(start, end + 1))
    ("int", "1-10 (+3)", [1, 4, 7, 10]),  # step range
    ("int", "1-10 (+4)", [1, 5, 9]),  # a step that misses the end stops below it
    ("int", "10-1 (-3)", [10, 7, 4]),  # descending: range(10, 1 + 1, -3) stops before 1
    ("int", "5-1", []),  # descending without a step: an empty range, no error
    ("int", "-5--2", [-5, -4, -3, -2]),  # signed bounds
    ("int", "1 - 3", [1, 2, 3]),  # spaces around the dash
    ("int", "0-10 [3]", [0, 5, 10]),  # counted range: linspace(0, 10, 3)
    ("int", "1-2 [4]", [1, 1, 1, 2]),  # linspace 1, 1.33, 1.67, 2 truncated by int()
    ("int", "1-5 [0]", []),  # count 0: linspace of nothing
    ("int", "1,2\n3", [1, 2, 3]),  # CSV: new lines continue the list
    ("int", "7, 1-3, 9", [7, 1, 2, 3, 9]),  # ranges mix with single values, in order
    ("int", "1_000", [1000]),  # int() accepts digit groups
    ("int", "", []),  # no text, no values
    ("float", "0.0-1.0 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),  # counted float range
    ("float", "1-3 (+0.5)", [1.0, 1.5, 2.0, 2.5, 3.0]),  # arange(1, 3.5, 0.5)
    ("float", "0-1 (+0.3)", [0.0, 0.3, 0.6, 0.3 * 3, 1.2]),  # arange(0, 1.3, 0.3): overshoots to 1.2
    ("float", "1-0 (-0.25)", [1.0, 0.75, 0.5, 0.25, 0.0]),  # arange(1, -0.25, -0.25)
    ("float", "5-1", []),  # arange(5, 2, 1)
    ("float", "1-3", [1.0, 2.0, 3.0]),  # step 1 by default
    ("float", "1.5, 2", [1.5, 2.0]),  # single values become floats
    ("float", "0.5-1 [3], 7", [0.5, 0.75, 1.0, 7.0]),
    ("str", 'a,"b, c"', ["a", "b, c"]),  # CSV quotes keep a comma
    ("str", 'a, "b, c"', ["a", '"b', 'c"']),  # ... only at a field's start: after a space they are text
    ("str", " Euler a , DPM++ 2M ", ["Euler a", "DPM++ 2M"]),  # items are stripped
    ("str", "1-3", ["1-3"]),  # str axes have no ranges
    ("str", "  ", [""]),  # one empty item
]


@pytest.mark.parametrize(("kind", "text", "expected"), CASES)
def test_values_as_a1111_reads_them(kind, text, expected):
    values = parse_axis_values(kind, text)
    assert values == expected
    assert all(type(value) is {"int": int, "float": float, "str": str}[kind] for value in values)


ERRORS = [
    ("int", "1.5", "'1.5'"),  # int() of a decimal
    ("int", "1-10 (3)", "'1-10 (3)'"),  # a step without its sign is no range, and no number
    ("int", "1-5 [2.5]", "'1-5 [2.5]'"),  # int counts are digits only
    ("float", "1-5 [2.5]", "'1-5 [2.5]'"),  # float axes match the count, then int('2.5') fails
    ("int", "1-5 (+0)", "'1-5 (+0)'"),  # range() refuses a zero step
    ("float", "1-5 (+0)", "'1-5 (+0)'"),  # arange divides by the step
    ("float", "1e-3", "'1e-3'"),  # the unescaped "." reads 1e-3 as the range "1e" to 3
    ("int", "1,,2", "''"),  # an empty item is no number
    ("float", "abc", "'abc'"),
]


@pytest.mark.parametrize(("kind", "text", "named"), ERRORS)
def test_values_a1111_cannot_read_are_refused_naming_the_item(kind, text, named):
    with pytest.raises(LoraSmithError, match=re.escape(named)):
        parse_axis_values(kind, text)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown axis value kind"):
        parse_axis_values("bool", "1")
