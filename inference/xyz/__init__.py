"""The X/Y/Z plot (A1111's `scripts/xyz_grid.py`): `python -m inference.xyz`, or `render_xyz` from Python."""

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()  # `python -m inference.xyz` imports this package, and diffusers with it, first

from inference.xyz.axes import AXES, Axis, find_axis  # noqa: E402
from inference.xyz.cell import Cell, XYZError  # noqa: E402
from inference.xyz.plan import AxisValues, read_axis  # noqa: E402
from inference.xyz.render import XYZCell, XYZResult, render_xyz  # noqa: E402

__all__ = [
    "AXES", "Axis", "AxisValues", "Cell", "XYZCell", "XYZError", "XYZResult", "find_axis", "read_axis",
    "render_xyz",
]  # fmt: skip
