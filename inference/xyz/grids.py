"""The X/Y/Z plot's grids, laid out as A1111's `draw_xyz_grid`: X across, Y down, one grid per Z value, and
the Z grids side by side under their Z labels (the grid of grids).

With the legend on, a grid has X labels over its columns and Y labels left of its rows (an axis of
"Nothing" draws no band); the grid of grids has the Z labels over each grid. With it off, cells only.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from inference.grid import make_grid
from inference.infotext import save_png
from inference.xyz.plan import AxisValues


def _labels(axis: AxisValues, legend: bool) -> list[str]:
    return axis.labels if legend else []


def z_grids(
    images: list[Image.Image], axes: tuple[AxisValues, AxisValues, AxisValues], legend: bool
) -> list[Image.Image]:
    """One grid per Z value of `images` in A1111's order (cell ix + iy·|X| + iz·|X|·|Y|)."""
    x, y = len(axes[0].values), len(axes[1].values)
    if len(images) != x * y * len(axes[2].values):
        raise ValueError(f"{len(images)} images for a {x} x {y} x {len(axes[2].values)} plot")
    grids = []
    for start in range(0, len(images), x * y):
        rows = [images[start + row * x : start + (row + 1) * x] for row in range(y)]
        grids.append(make_grid(rows, _labels(axes[1], legend), _labels(axes[0], legend)))
    return grids


def grid_of_grids(grids: list[Image.Image], z: AxisValues, legend: bool) -> Image.Image:
    """The Z grids in one row, each under its Z label."""
    return make_grid([grids], [], _labels(z, legend))


def write_grids(
    images: list[Image.Image],
    axes: tuple[AxisValues, AxisValues, AxisValues],
    out_dir: Path,
    legend: bool,
    infotexts: list[str],
) -> tuple[Path, list[Path]]:
    """Save `grid-zK.png` per Z value and `xyz_grid.png`; `infotexts`: one per Z grid, then the main one."""
    grids = z_grids(images, axes, legend)
    paths = [save_png(grid, out_dir / f"grid-z{k}.png", infotexts[k]) for k, grid in enumerate(grids)]
    main = save_png(grid_of_grids(grids, axes[2], legend), out_dir / "xyz_grid.png", infotexts[-1])
    return main, paths
