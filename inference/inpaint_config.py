"""The `inpaint:` config group, typed: A1111's img2img "Inpaint" tab settings, checked once at the border."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data.typed_config import ConfigError
from inference.input_checks import check_finite, check_image_file

# A1111's names, in the order of its 0..3 indices ("inpainting_fill"); "Masked content" in infotext.
FILL_MODES = ("fill", "original", "latent noise", "latent nothing")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")


def _choice(key: str, value: str | int, names: tuple[str, ...]) -> int:
    """The index of `value` among `names`: the name (any case) or its A1111 index."""
    text = str(value).strip()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    for index, name in enumerate(names):
        if name.casefold() == text.casefold():
            return index
    choices = ", ".join(f'"{name}" ({i})' for i, name in enumerate(names))
    raise ConfigError(f"{key}={value} is not one of {choices}")


@dataclass
class InpaintConfig:
    """The `inpaint:` group. `mask` (with init_image) turns img2img into inpainting, white = repainted."""

    mask: str | None = None  # an image file: white (or opaque, for a mask with alpha) is repainted
    mask_blur: int = 4  # Gaussian blur of the mask in pixels, along x and y ("Mask blur")
    inpainting_mask_invert: str = "Inpaint masked"  # or "Inpaint not masked" (0 / 1)
    inpainting_fill: str = "original"  # fill, original, latent noise, latent nothing (0..3)
    inpaint_full_res: str = "Whole picture"  # or "Only masked" (0 / 1): render the mask's box at full size
    inpaint_full_res_padding: int = 32  # pixels around the mask's box ("Only masked padding")
    inpainting_mask_weight: float = 1.0  # inpainting models: how much of the masked image is hidden (0..1)

    @property
    def fill_mode(self) -> int:
        """A1111's inpainting_fill index: 0 fill, 1 original, 2 latent noise, 3 latent nothing."""
        return _choice("inpaint.inpainting_fill", self.inpainting_fill, FILL_MODES)

    @property
    def invert(self) -> bool:
        """True for "Inpaint not masked"."""
        return _choice("inpaint.inpainting_mask_invert", self.inpainting_mask_invert, MASK_MODES) == 1

    @property
    def only_masked(self) -> bool:
        """True for "Only masked" (A1111's inpaint_full_res)."""
        return _choice("inpaint.inpaint_full_res", self.inpaint_full_res, INPAINT_AREAS) == 1

    def validate(self, init_image: str | None) -> None:
        """Raise ConfigError, one line naming the key, for a setting no run can use."""
        if self.mask is not None and init_image is None:
            raise ConfigError(f"inpaint.mask={self.mask} needs init_image=...: give the picture to repaint")
        if self.mask is not None and not Path(self.mask).is_file():
            raise ConfigError(
                f"inpaint.mask={self.mask} is not a file: give the mask image (white = repainted)"
            )
        check_image_file("inpaint.mask", self.mask)
        _ = (self.fill_mode, self.invert, self.only_masked)  # each raises for a name it does not know
        check_finite(**{"inpaint.inpainting_mask_weight": self.inpainting_mask_weight})
        if not 0 <= self.inpainting_mask_weight <= 1:
            raise ConfigError(
                f"inpaint.inpainting_mask_weight must be between 0 and 1, got {self.inpainting_mask_weight}"
            )
        if not 0 <= self.mask_blur <= 64:
            raise ConfigError(f"inpaint.mask_blur must be between 0 and 64 pixels, got {self.mask_blur}")
        if not 0 <= self.inpaint_full_res_padding <= 256:
            raise ConfigError(
                f"inpaint.inpaint_full_res_padding must be between 0 and 256 pixels, "
                f"got {self.inpaint_full_res_padding}"
            )
