"""A ControlNet unit as A1111's ControlNet extension describes one (its ControlNetUnit fields and defaults), its
checks, the control map it gives for a picture size, and its infotext entry ("ControlNet 0": "Module: ...")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from inference.components import BaseModel
from inference.controlnet import CONTROL_MODES, ActiveUnit
from inference.controlnet_crop import MaskCrop, crop_to_mask_region
from inference.controlnet_hints import (
    RESIZE_MODE_ALIASES,
    RESIZE_MODES,
    control_tensor,
    fit_control_map,
    hwc3,
    pixel_perfect_resolution,
)
from inference.controlnet_models import load_controlnet
from inference.controlnet_passes import (
    HR_OPTIONS,
    PassControl,
    first_pass_is_hires,
    hires_control_mode,
    runs_in_pass,
)
from inference.controlnet_preprocessors import ALIASES, find_preprocessor
from inference.openpose_skeleton import read_pose_json


@dataclass
class ControlNetUnit:
    """One entry of the `controlnet:` list. `model`: a diffusers folder, a hub id or a single file (as in the
    extension's models/ControlNet); `image`: a picture, or an OpenPose JSON (drawn as its skeleton).

    processor_res / threshold_a / threshold_b at -1 (or out of the preprocessor's range) take its defaults,
    as the extension resets them. `rgb_to_bgr` swaps the map's red and blue (the extension's old "RGB to BGR"
    option, for models trained on BGR maps); it is not written in infotext, as the extension no longer has it.
    """

    model: str
    image: str
    module: str = "none"
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    pixel_perfect: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    rgb_to_bgr: bool = False
    hr_option: str = "Both"  # with the hires fix: the passes the unit controls (HR_OPTIONS)
    inpaint_crop_input_image: bool = True  # "Only masked" inpainting: crop the image as the picture is

    def __post_init__(self) -> None:
        self.module = ALIASES.get(self.module, self.module)
        self.resize_mode = RESIZE_MODE_ALIASES.get(self.resize_mode, self.resize_mode)
        if Path(self.image).suffix.lower() == ".json" and self.module == "none":
            self.module = "openpose_json"

    def check(self, in_memory: bool = False) -> None:
        """Raise ValueError (one line) for values the extension refuses, or files that are not there.

        `in_memory`: the model is given as a loaded ControlNet, so `model` names no file.
        """
        for name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0.0 <= self.weight <= 2.0:
            raise ValueError(f"weight must be within 0 and 2 (the extension's range), got {self.weight}")
        for name in ("guidance_start", "guidance_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} is a fraction of the steps within 0 and 1, got {getattr(self, name)}"
                )
        if self.guidance_start > self.guidance_end:
            raise ValueError(
                f"guidance_start {self.guidance_start} is after guidance_end {self.guidance_end}"
            )
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(
                f"unknown control_mode {self.control_mode!r}; use one of {', '.join(CONTROL_MODES)}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"unknown resize_mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}"
            )
        if self.hr_option not in HR_OPTIONS:
            raise ValueError(f"unknown hr_option {self.hr_option!r}; use one of {', '.join(HR_OPTIONS)}")
        find_preprocessor(self.module)
        if not Path(self.image).is_file():
            raise ValueError(f"image {self.image} is not a file: give the control image (or OpenPose JSON)")
        if not (in_memory or Path(self.model).exists() or self.model.count("/") == 1):
            raise ValueError(f"model {self.model} is not a file, a folder or a hub id: give the ControlNet")

    def read_image(self, crop: MaskCrop | None = None) -> np.ndarray:
        """The unit's input as (H, W, 3) uint8 RGB: an OpenPose JSON drawn, or a picture; with `crop`
        ("Only masked" inpainting), the part that the picture's crop box shows, at the render size.

        A picture with a partly transparent alpha is the extension's canvas scribble: its alpha is the map.
        """
        image = self._read_whole()
        if crop is None or not self.inpaint_crop_input_image:
            return image
        return crop_to_mask_region(image, crop, self.resize_mode)

    def _read_whole(self) -> np.ndarray:
        if self.module == "openpose_json":
            return read_pose_json(self.image)
        try:
            with Image.open(self.image) as opened:
                pixels = np.asarray(
                    opened.convert("RGBA") if "A" in opened.getbands() else opened.convert("RGB")
                )
        except Exception as error:  # Pillow raises many types on a broken file; each means "not a picture"
            raise ValueError(f"image {self.image} cannot be read as a picture ({error})") from None
        if pixels.shape[2] == 4:
            alpha = pixels[:, :, 3]
            return pixels[:, :, :3] if (alpha <= 5).all() or (alpha >= 250).all() else hwc3(alpha)
        return pixels

    def settings(self, image: np.ndarray, height: int, width: int) -> tuple[float, float, float]:
        """(processor_res, threshold_a, threshold_b) the preprocessor runs with, defaults filled in.

        Pixel perfect replaces the resolution by the one that lands the image's short side on the picture.
        """
        preprocessor = find_preprocessor(self.module)
        # Pixel perfect is set after the extension's range check, so it is used even below the slider's 64.
        res = (
            pixel_perfect_resolution(image, height, width, self.resize_mode)
            if self.pixel_perfect
            else preprocessor.resolution.resolve(int(self.processor_res))
        )
        # The extension's fields are an int and two floats; defaults keep the preprocessor's own type.
        return (
            res,
            preprocessor.a.resolve(float(self.threshold_a)),
            preprocessor.b.resolve(float(self.threshold_b)),
        )

    def control_map(self, height: int, width: int, crop: MaskCrop | None = None) -> np.ndarray:
        """The map the ControlNet sees for a (height, width) picture: preprocessed, resized, (H, W, 3) uint8."""
        return self.control_maps([(height, width)], crop)[0]

    def control_maps(self, sizes: list[tuple[int, int]], crop: MaskCrop | None = None) -> list[np.ndarray]:
        """The map for each (height, width) in `sizes`, (H, W, 3) uint8 each: the preprocessor runs once,
        with the settings of the first size, and its result is fitted to each size (the extension's hires
        map is the same detected map fitted to the hires size)."""
        image = self.read_image(crop)
        res, a, b = self.settings(image, *sizes[0])
        detected = find_preprocessor(self.module).function(image, res, a, b)
        maps = [fit_control_map(detected, height, width, self.resize_mode) for height, width in sizes]
        return [np.ascontiguousarray(m[:, :, ::-1]) if self.rgb_to_bgr else m for m in maps]

    def infotext(self, model_name: str, height: int, width: int, crop: MaskCrop | None = None) -> str:
        """The extension's infotext value for this unit, fields in its order (ControlNetUnit.infotext_fields)."""
        res, a, b = self.settings(self.read_image(crop), height, width)
        fields = {
            "Module": self.module,
            "Model": model_name,
            "Weight": float(self.weight),
            "Resize Mode": self.resize_mode,
            "Processor Res": res,
            "Threshold A": a,
            "Threshold B": b,
            "Guidance Start": float(self.guidance_start),
            "Guidance End": float(self.guidance_end),
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode,
        }
        return ", ".join(f"{key}: {value}" for key, value in fields.items())


class UnitError(ValueError):
    """A unit that cannot be used, in one line naming `controlnet[i]`."""


def prepare_units(
    model: BaseModel,
    units: list[ControlNetUnit],
    height: int,
    width: int,
    controlnets: dict[str, nn.Module] | None = None,
    hires_size: tuple[int, int] | None = None,
    crop: MaskCrop | None = None,
) -> PassControl:
    """The units ready to sample (height, width) pictures with `model`, and with the hires fix the hires
    pass at `hires_size` (width, height); `crop`: "Only masked" inpainting's box (see MaskCrop).

    `controlnets` maps a unit's `model` string to a ControlNet in memory; other models load once each and
    are added to it (so a caller's dict caches them across calls).
    """
    loaded = {} if controlnets is None else controlnets
    sizes = [(height, width)] + ([] if hires_size is None else [(hires_size[1], hires_size[0])])
    first_is_hires = first_pass_is_hires(height, None if hires_size is None else hires_size[1])
    control = PassControl([])
    for index, unit in enumerate(units):
        try:
            unit.check(in_memory=unit.model in loaded)
            if unit.model not in loaded:
                loaded[unit.model] = load_controlnet(unit.model, model.unet)
            hints = [control_tensor(m) for m in unit.control_maps(sizes, crop)]
        except ValueError as error:
            raise UnitError(f"controlnet[{index}]: {error}") from None
        controlnet, settings = loaded[unit.model], (unit.weight, unit.guidance_start, unit.guidance_end)
        if hires_size is None or runs_in_pass(unit.hr_option, first_is_hires):
            mode = hires_control_mode(unit.module, unit.control_mode) if first_is_hires else unit.control_mode
            control.first.append(ActiveUnit(controlnet, hints[0], *settings, mode))
        if hires_size is not None and runs_in_pass(unit.hr_option, True):
            mode = hires_control_mode(unit.module, unit.control_mode)
            control.hires.append(ActiveUnit(controlnet, hints[1], *settings, mode))
    return control
