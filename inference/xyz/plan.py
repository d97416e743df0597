"""From axis names and value texts to the plot's cells, checked before anything renders.

Cell `ix + iy·|X| + iz·|X|·|Y|` is the settings with the X, Y and Z values applied in that order, as in
A1111. Seeds follow A1111's "Keep -1 for seeds": unless it is set, a seed of -1 (in the settings or on a
Seed / Var. seed axis) is drawn once, before the plot, so every cell shares it; with it set, each cell
draws its own.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, replace

from inference.axis_values import AxisValueError, parse_axis_values
from inference.xyz.axes import Axis, find_axis
from inference.xyz.cell import Cell, XYZError

MAX_SEED = 4294967294  # A1111's range for a random seed


def random_seed() -> int:
    return random.randrange(MAX_SEED)


@dataclass
class AxisValues:
    """An axis, the text its values came from (recorded in the grid's infotext) and the values."""

    axis: Axis
    text: str
    values: list

    @property
    def labels(self) -> list[str]:
        return [self.axis.label_for(value) for value in self.values]


def read_axis(name: str, text: str, letter: str = "X") -> AxisValues:
    """The axis `name` (key or A1111 label) with its values parsed from `text`; "Nothing" has one value."""
    axis = find_axis(name)
    if axis.key == "nothing":
        return AxisValues(axis, "", [0])
    try:
        values = parse_axis_values(axis.kind, text)
    except AxisValueError as error:
        raise XYZError(f"{letter} values for {axis.label}: {error}") from None
    if not values:
        raise XYZError(f"{letter} axis {axis.label} has no values: give {letter.lower()}_values")
    return AxisValues(axis, text, values)


def fix_seeds(axis: AxisValues) -> AxisValues:
    """A Seed or Var. seed axis with each -1 replaced by a random seed (one draw per value)."""
    if not axis.axis.is_seed:
        return axis
    return replace(axis, values=[random_seed() if value == -1 else value for value in axis.values])


def fix_settings_seeds(cell: Cell) -> Cell:
    """The settings with a seed or variation seed of -1 drawn once."""
    params = cell.params
    seed = random_seed() if params.seed == -1 else params.seed
    subseed = random_seed() if params.subseed == -1 else params.subseed
    return replace(cell, params=replace(params, seed=seed, subseed=subseed))


def _check_combination(cells: list[Cell], axes: list[AxisValues]) -> None:
    """Axes that would leave every cell unchanged are refused rather than drawn as identical pictures."""
    keys = {axis.axis.key for axis in axes}
    if "lora_weight" in keys and not any(cell.networks for cell in cells):
        raise XYZError(
            "a LoRA weight axis needs a LoRA: add a checkpoint or network axis of LoRA files, or set loras"
        )
    if "var_seed" in keys and not any(cell.params.subseed_strength for cell in cells):
        raise XYZError("a Var. seed axis does nothing at variation strength 0: set var_strength (e.g. 0.3)")


def check_grid_size(axes: tuple[AxisValues, ...], width: int, height: int, max_megapixels: int) -> None:
    """A1111's guard against a grid too large to draw (img_max_size_mp): every cell at width x height."""
    cells = math.prod(len(axis.values) for axis in axes)
    megapixels = round(cells * width * height / 1_000_000)
    if megapixels >= max_megapixels:
        raise XYZError(
            f"the grid would be {megapixels} megapixels ({cells} cells of {width}x{height}), more than "
            f"max_grid_megapixels={max_megapixels} (A1111's img_max_size_mp): give fewer values, or raise it"
        )


def plan_cells(
    settings: Cell, x: AxisValues, y: AxisValues, z: AxisValues, keep_random_seeds: bool = False
) -> tuple[list[Cell], tuple[AxisValues, AxisValues, AxisValues]]:
    """Every cell of the plot, in A1111's index order, and the axes with their seeds fixed."""
    axes = [x, y, z]
    for axis in axes:
        if axis.axis.check is not None:
            axis.axis.check(axis.values, settings)
    if not keep_random_seeds:
        settings = fix_settings_seeds(settings)
        axes = [fix_seeds(axis) for axis in axes]
    cells = []
    for z_value in axes[2].values:
        for y_value in axes[1].values:
            for x_value in axes[0].values:
                cell = copy.deepcopy(settings)
                for axis, value in zip(axes, (x_value, y_value, z_value), strict=True):
                    axis.axis.apply(cell, value, axis.values)
                cells.append(cell)
    _check_combination(cells, axes)
    return cells, (axes[0], axes[1], axes[2])
