"""The render command's ControlNet units: checked before the model loads, loaded once per run, rendered with,
and written in infotext as "ControlNet 0", "ControlNet 1", ... (the extension's keys)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from data.typed_config import ConfigError
from inference.components import BaseModel
from inference.controlnet import ActiveUnit, generate_controlled_batch
from inference.controlnet_models import display_name, load_controlnet
from inference.controlnet_units import ControlNetUnit, active_unit
from inference.embeddings import EmbeddingDatabase
from inference.txt2img import GenerationParams


def check_units(units: list[ControlNetUnit], img2img: bool, hires: bool) -> None:
    """Each unit's values and files, as ConfigError naming `controlnet[i]`."""
    if units and (img2img or hires):
        raise ConfigError(
            "controlnet units apply to txt2img without the hires fix here: set controlnet=[] or "
            "init_image=null hires.enabled=false"
        )
    for index, unit in enumerate(units):
        try:
            unit.check()
        except ValueError as error:
            raise ConfigError(f"controlnet[{index}]: {error}") from None


def load_units(model: BaseModel, units: list[ControlNetUnit], height: int, width: int) -> list[ActiveUnit]:
    """The units ready to sample (height, width) pictures; a ControlNet named twice is loaded once."""
    loaded, active = {}, []
    for index, unit in enumerate(units):
        try:
            if unit.model not in loaded:
                loaded[unit.model] = load_controlnet(unit.model, model.unet)
            active.append(active_unit(unit, loaded[unit.model], height, width))
        except ValueError as error:
            raise ConfigError(f"controlnet[{index}]: {error}") from None
    return active


def infotext_fields(units: list[ControlNetUnit], height: int, width: int) -> dict[str, str]:
    """ "ControlNet i" → the unit's entry, for each unit in order."""
    return {
        f"ControlNet {i}": unit.infotext(display_name(unit.model), height, width)
        for i, unit in enumerate(units)
    }


def controlled_renderer(
    model: BaseModel, units: list[ActiveUnit], embeddings: EmbeddingDatabase | None
) -> Callable[[list[GenerationParams]], list[Image.Image]]:
    """What renders one txt2img batch with the units."""
    return lambda batch: generate_controlled_batch(model, batch, units, embeddings)
