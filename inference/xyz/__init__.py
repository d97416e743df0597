"""The X/Y/Z plot (A1111's `scripts/xyz_grid.py`): `python -m inference.xyz`, or `render_xyz` from Python."""

from inference.xyz.axes import AXES, Axis, find_axis
from inference.xyz.cell import Cell, XYZError
from inference.xyz.plan import AxisValues, read_axis
from inference.xyz.render import XYZCell, XYZResult, render_xyz

__all__ = [
    "AXES", "Axis", "AxisValues", "Cell", "XYZCell", "XYZError", "XYZResult", "find_axis", "read_axis",
    "render_xyz",
]  # fmt: skip
