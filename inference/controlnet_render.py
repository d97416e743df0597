"""The render command's ControlNet units: checked before the model loads, loaded once per run, rendered with,
and written in infotext as "ControlNet 0", "ControlNet 1", ... (the extension's keys)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from torch import nn

from data.typed_config import ConfigError
from inference.components import BaseModel
from inference.controlnet import ActiveUnit, generate_controlled_batch
from inference.controlnet_models import display_name
from inference.controlnet_units import ControlNetUnit, UnitError, prepare_units
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
    """The units ready to sample (height, width) pictures, errors as ConfigError naming `controlnet[i]`."""
    try:
        return prepare_units(model, units, height, width)
    except UnitError as error:
        raise ConfigError(str(error)) from None


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


def generate_with_units(
    model: BaseModel,
    batch: list[GenerationParams],
    units: list[ControlNetUnit],
    controlnets: dict[str, nn.Module] | None = None,
    embeddings: EmbeddingDatabase | None = None,
) -> list[Image.Image]:
    """Render a txt2img batch with `units` from Python; `controlnets` maps a unit's `model` to a ControlNet
    already in memory (one being trained, say), others load from their path."""
    active = prepare_units(model, units, batch[0].height, batch[0].width, controlnets)
    return generate_controlled_batch(model, batch, active, embeddings)
