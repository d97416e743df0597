"""The render command's ControlNet units: checked before the model loads, loaded once per run, rendered with
(txt2img, img2img, inpainting or the hires fix: inference.controlnet_passes), and written in infotext as
"ControlNet 0", "ControlNet 1", ... (the extension's keys)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from torch import nn

from data.typed_config import ConfigError
from inference.components import BaseModel
from inference.controlnet import generate_controlled_batch
from inference.controlnet_crop import MaskCrop
from inference.controlnet_models import display_name
from inference.controlnet_passes import PassControl
from inference.controlnet_units import ControlNetUnit, UnitError, prepare_units
from inference.embeddings import EmbeddingDatabase
from inference.hires import HiresParams, generate_hires_batch, hires_size
from inference.img2img import img2img
from inference.txt2img import GenerationParams


def check_units(units: list[ControlNetUnit]) -> None:
    """Each unit's values and files, as ConfigError naming `controlnet[i]`."""
    for index, unit in enumerate(units):
        try:
            unit.check()
        except ValueError as error:
            raise ConfigError(f"controlnet[{index}]: {error}") from None


def load_units(
    model: BaseModel,
    units: list[ControlNetUnit],
    height: int,
    width: int,
    hires_size: tuple[int, int] | None = None,
    crop: MaskCrop | None = None,
) -> PassControl | None:
    """The units ready to sample (height, width) pictures (and the hires pass at `hires_size`, (width,
    height)), None for no units; errors as ConfigError naming `controlnet[i]`."""
    if not units:
        return None
    if getattr(model, "text_encoder_2", None) is not None:  # its UNet takes size/crop inputs ours don't pass
        raise ConfigError(
            "controlnet: ControlNet units work with SD 1.x/2.x models; SDXL is not supported yet"
        )
    try:
        return prepare_units(model, units, height, width, hires_size=hires_size, crop=crop)
    except UnitError as error:
        raise ConfigError(str(error)) from None


def infotext_fields(
    units: list[ControlNetUnit], height: int, width: int, crop: MaskCrop | None = None
) -> dict[str, str]:
    """ "ControlNet i" → the unit's entry, for each unit in order."""
    return {
        f"ControlNet {i}": unit.infotext(display_name(unit.model), height, width, crop)
        for i, unit in enumerate(units)
    }


def controlled_renderer(
    model: BaseModel, control: PassControl, embeddings: EmbeddingDatabase | None
) -> Callable[[list[GenerationParams]], list[Image.Image]]:
    """What renders one txt2img batch with the units."""
    return lambda batch: generate_controlled_batch(model, batch, control.first, embeddings)


def generate_with_units(
    model: BaseModel,
    batch: list[GenerationParams],
    units: list[ControlNetUnit],
    controlnets: dict[str, nn.Module] | None = None,
    embeddings: EmbeddingDatabase | None = None,
    *,
    init_image: Image.Image | None = None,
    denoising_strength: float = 0.75,
    hires: HiresParams | None = None,
) -> list[Image.Image]:
    """Render a batch with `units` from Python: txt2img, img2img from `init_image`, or txt2img with the
    `hires` fix. `controlnets` maps a unit's `model` to a ControlNet already in memory (one being trained,
    say), others load from their path (and are added to it)."""
    first = batch[0]
    hires_px = (
        None if hires is None or init_image is not None else hires_size(first.width, first.height, hires)
    )
    control = prepare_units(model, units, first.height, first.width, controlnets, hires_px)
    if init_image is not None:
        return img2img(model, batch, init_image, denoising_strength, embeddings=embeddings, control=control)
    if hires is not None:
        return generate_hires_batch(model, batch, hires, embeddings, control)
    return generate_controlled_batch(model, batch, control.first, embeddings)
