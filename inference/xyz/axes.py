"""The X/Y/Z plot's axes: A1111's label, a short key, the value kind, and how a value changes a cell.

`apply(cell, value, values)` changes one cell as A1111's `AxisOption.apply(p, x, xs)` does; `check(values,
cell)` refuses values no cell could take before anything renders (A1111 finds some of these mid-plot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inference.models.spec import BUILT_IN_MODELS
from inference.sampler_names import find_sampler
from inference.schedules import find_schedule
from inference.xyz.cell import Cell, XYZError
from inference.xyz.controlnet_axes import CONTROLNET_AXES, check_units, unit_field


def _label_value(axis: Axis, value: Any) -> str:
    """A1111's default cell label, `"<Label>: <value>"`, floats rounded to 8 places."""
    return f"{axis.label}: {round(value, 8) if isinstance(value, float) else value}"


def _value_only(axis: Axis, value: Any) -> str:
    return str(value)


def _file_name(axis: Axis, value: Any) -> str:
    return Path(str(value)).name


def _nothing(axis: Axis, value: Any) -> str:
    return ""


@dataclass(frozen=True)
class Axis:
    """One kind of axis. `kind` is `parse_axis_values`'s: "int", "float" or "str"."""

    key: str
    label: str
    kind: str
    apply: Callable[[Cell, Any, list], None]
    format: Callable[[Axis, Any], str] = _label_value
    check: Callable[[list, Cell], None] | None = None
    is_seed: bool = False  # -1 is a random seed, fixed once for the plot unless random seeds are kept

    def label_for(self, value: Any) -> str:
        return self.format(self, value)


def _param(name: str) -> Callable[[Cell, Any, list], None]:
    def apply(cell: Cell, value: Any, values: list) -> None:
        cell.params = replace(cell.params, **{name: value})

    return apply


def _prompt_sr(cell: Cell, value: str, values: list[str]) -> None:
    search = values[0]
    params = cell.params
    cell.params = replace(
        params,
        prompt=params.prompt.replace(search, value),
        negative_prompt=params.negative_prompt.replace(search, value),
    )


def _check_prompt_sr(values: list[str], cell: Cell) -> None:
    if values[0] not in cell.params.prompt and values[0] not in cell.params.negative_prompt:
        raise XYZError(
            f"Prompt S/R: {values[0]!r} (the first value, the text to replace) is in neither the prompt nor "
            "the negative prompt"
        )


def _check_samplers(values: list[str], cell: Cell) -> None:
    for value in values:
        if find_sampler(value) is None:
            raise XYZError(f"Sampler: unknown sampler {value!r}; use an A1111 name such as 'Euler a'")


def _check_schedules(values: list[str], cell: Cell) -> None:
    for value in values:
        if find_schedule(value) is None:
            raise XYZError(f"Schedule type: unknown schedule {value!r}; use an A1111 one such as 'Karras'")


def _check_at_least(minimum: int | float, label: str) -> Callable[[list, Cell], None]:
    def check(values: list, cell: Cell) -> None:
        if bad := [value for value in values if value < minimum]:
            raise XYZError(f"{label}: {bad[0]} is below {minimum}")

    return check


def _denoising(cell: Cell, value: float, values: list) -> None:
    # As in A1111: txt2img's "denoising strength" is the hires pass's.
    if cell.init_image is not None:
        cell.denoising = value
    else:
        _hires_denoising(cell, value, values)


def _check_denoising(values: list[float], cell: Cell) -> None:
    if cell.init_image is None and cell.hires is None:
        raise XYZError("Denoising changes img2img or the hires fix: set init_image or hires.enabled=true")
    _check_strengths("Denoising", values)


def _hires_denoising(cell: Cell, value: float, values: list) -> None:
    assert cell.hires is not None  # checked first
    cell.hires = replace(cell.hires, denoising_strength=value)


def _check_hires_denoising(values: list[float], cell: Cell) -> None:
    if cell.hires is None:
        raise XYZError("Hires denoising needs the hires fix: set hires.enabled=true")
    _check_strengths("Hires denoising", values)


def _check_strengths(label: str, values: list[float]) -> None:
    if bad := [value for value in values if not 0 < value <= 1]:
        raise XYZError(f"{label}: {bad[0]} is outside (0, 1]")


def _lora_weight(cell: Cell, value: float, values: list) -> None:
    cell.lora_weight = value


def _checkpoint(cell: Cell, value: str, values: list) -> None:
    # A run's epoch files of a network are patched in; anything else is a base model to load.
    if is_network_file(value):
        cell.networks = [*cell.networks, Path(value)]
    else:
        cell.checkpoint = value


def _check_files(label: str, built_in: tuple[str, ...] = ()) -> Callable[[list, Cell], None]:
    def check(values: list[str], cell: Cell) -> None:
        for value in values:
            if value not in built_in and not Path(value).exists():
                raise XYZError(f"{label}: {value} does not exist; give the path of a file")

    return check


def _network(cell: Cell, value: str, values: list) -> None:
    cell.networks = [*cell.networks, Path(value)]


def is_network_file(value: str) -> bool:
    """A `.safetensors` file whose keys are a kohya network's (`lora_unet_…` / `lora_te_…`)."""
    path = Path(value)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return any(key.startswith("lora_") for key in handle.keys())


AXES = [
    Axis("nothing", "Nothing", "str", lambda cell, value, values: None, _nothing),
    Axis("seed", "Seed", "int", _param("seed"), is_seed=True),
    Axis("var_seed", "Var. seed", "int", _param("subseed"), is_seed=True),
    Axis("var_strength", "Var. strength", "float", _param("subseed_strength")),
    Axis("steps", "Steps", "int", _param("steps"), check=_check_at_least(1, "Steps")),
    Axis("cfg", "CFG Scale", "float", _param("cfg_scale")),
    Axis("prompt_sr", "Prompt S/R", "str", _prompt_sr, _value_only, _check_prompt_sr),
    Axis("sampler", "Sampler", "str", _param("sampler"), _value_only, _check_samplers),
    Axis("scheduler", "Schedule type", "str", _param("scheduler"), check=_check_schedules),
    Axis("clip_skip", "Clip skip", "int", _param("clip_skip"), check=_check_at_least(1, "Clip skip")),
    Axis("denoising", "Denoising", "float", _denoising, check=_check_denoising),
    Axis("hires_denoising", "Hires denoising", "float", _hires_denoising, check=_check_hires_denoising),
    Axis("lora_weight", "LoRA weight", "float", _lora_weight),
    Axis(
        "checkpoint",
        "Checkpoint name",
        "str",
        _checkpoint,
        _file_name,
        _check_files("Checkpoint name", BUILT_IN_MODELS),
    ),  # fmt: skip
    Axis("network", "Network", "str", _network, _file_name, _check_files("Network")),
    *(
        Axis(key, label, kind, unit_field(name), check=check_units(label, valid, expected))
        for key, label, kind, name, valid, expected in CONTROLNET_AXES
    ),
]


def find_axis(name: str) -> Axis:
    """The axis with this key or A1111 label (case-insensitive); XYZError naming the choices otherwise."""
    wanted = name.strip().casefold()
    for axis in AXES:
        if wanted in (axis.key, axis.label.casefold()):
            return axis
    raise XYZError(f"unknown axis {name!r}; use one of {', '.join(axis.key for axis in AXES)}")
