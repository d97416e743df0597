"""The extension's "Crop input image based on A1111 mask" (on by default): with "Only masked" inpainting the
picture renders the box around the mask, so a unit's image is cut to the same box.

As the extension does it: the image is resized to the init picture's size by the unit's resize mode (A1111's
resize_image), cropped to the picture's crop box, and resized and filled to the render size; the
preprocessor and the usual fitting then run on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.overlay import crop_and_resize, resize_and_fill
from inference.upscalers import lanczos

Region = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2 and y2 exclusive

# The unit's resize modes as A1111's resize_image modes 0, 1 and 2.
A1111_RESIZE = {
    "Just Resize": lanczos,
    "Crop and Resize": crop_and_resize,
    "Resize and Fill": resize_and_fill,
}


@dataclass(frozen=True)
class MaskCrop:
    """Where "Only masked" inpainting renders: a box of the init picture, drawn at the render size."""

    region: Region  # the crop box in the init picture
    picture_size: tuple[int, int]  # (width, height) of the init picture (and its mask)
    render_size: tuple[int, int]  # (width, height) the box is rendered at


def crop_to_mask_region(image: np.ndarray, crop: MaskCrop, resize_mode: str) -> np.ndarray:
    """(H, W, 3) uint8 → the part of it over `crop.region`, (render height, render width, 3) uint8."""
    whole = A1111_RESIZE[resize_mode](Image.fromarray(image).convert("RGB"), *crop.picture_size)
    return np.array(resize_and_fill(whole.crop(crop.region), *crop.render_size))
