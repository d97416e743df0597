"""Inpainting masks as A1111 prepares them: binarized, blurred, the box around them, and the "fill" content.

Masks are Pillow "L" images, white (255) where the picture is repainted. Regions are (x1, y1, x2, y2) in
pixels, x2 and y2 exclusive, as Pillow's `crop` takes them.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

Region = tuple[int, int, int, int]


def binary_mask(mask: Image.Image) -> Image.Image:
    """The "L" mask of a mask file: its alpha, cut at 128, when it has a non-opaque one; else its luminance.

    A1111 reads the drawn (RGBA) mask this way: painted strokes are opaque over a transparent canvas.
    """
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.getchannel("A").point(lambda value: 255 if value > 128 else 0)
    return mask.convert("L")


def blur_kernel_size(sigma: float) -> int:
    """A1111's kernel length for a blur of `sigma` pixels: 2 * int(2.5 sigma + 0.5) + 1 taps."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """A1111's mask blur: OpenCV's Gaussian of `blur_x` pixels along x, then `blur_y` along y (0: none),
    on the 8-bit mask (so each pass rounds), "L" out."""
    values = np.asarray(mask.convert("L"))
    if blur_x > 0:
        values = cv2.GaussianBlur(values, (blur_kernel_size(blur_x), 1), blur_x)
    if blur_y > 0:
        values = cv2.GaussianBlur(values, (1, blur_kernel_size(blur_y)), blur_y)
    return Image.fromarray(values, mode="L")


def crop_region(mask: Image.Image, padding: int = 0) -> Region | None:
    """The box around the mask's non-zero pixels grown by `padding` on each side and kept inside the image;
    None for an empty mask (A1111's get_crop_region_v2)."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    width, height = mask.size
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, width), min(y2 + padding, height)


def _widen(low: int, high: int, extra: int, limit: int) -> tuple[int, int]:
    """Grow [low, high) by `extra` (half before, the rest after), shifted back inside [0, limit]."""
    low -= extra // 2
    high += extra - extra // 2
    if high >= limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, high - low
    return low, min(high, limit)


def expand_crop_region(
    region: Region, width: int, height: int, image_width: int, image_height: int
) -> Region:
    """Grow `region` on its short side to the aspect ratio width:height of the render, inside the image.

    As A1111's expand_crop_region: the growth is truncated to whole pixels and split evenly (odd extra pixel
    after); a side pushed past the image edge slides back, and is clipped only if the image is too small.
    """
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        extra = int((x2 - x1) / (width / height) - (y2 - y1))
        y1, y2 = _widen(y1, y2, extra, image_height)
    else:
        extra = int((y2 - y1) * (width / height) - (x2 - x1))
        x1, x2 = _widen(x1, x2, extra, image_width)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked pixels replaced by colours blurred in from around them.

    The unmasked pixels (alpha-weighted by 255 - mask) are blurred at radii 256 down to 0 and composited
    over each other, the sharp layers last, so each masked pixel takes the colour of its nearest surround.
    """
    keep = ImageOps.invert(mask.convert("L"))
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")
