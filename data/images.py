"""Pictures as upright RGB: loading, scaling a crop window to a training size, colour augmentation, writing."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from data.atomic import write_bytes_atomic
from data.errors import DatasetError

WHITE = (255, 255, 255)
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
Size = tuple[int, int]  # (w, h) in pixels
Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels
# A scaled picture up to this many times its crop window is scaled whole, as always; past it only the
# window is computed. 4 keeps every picture up to 4:1 (square crops) on the exact old path.
FULL_RESIZE_LIMIT = 4
_PILLOW_PICKS_ORDER = int(PIL.__version__.split(".")[0]) >= 13
# kohya --color_aug: with this probability, either a hue turn of up to ±HUE_SHIFT degrees or a gamma drawn
# from GAMMA_RANGE, half the time each. kohya's code turns OpenCV's 0–180 hue by ±8 (so ±16°) and raises the
# 0–255 values to the gamma (a brightness jump); here the hue turns ±8° and the gamma acts on 0–1.
COLOR_AUG_PROBABILITY = 1 / 3
HUE_SHIFT = 8.0
GAMMA_RANGE = (0.95, 1.05)


def has_alpha(image: Image.Image) -> bool:
    """Whether the picture's mode or palette can hold transparent pixels."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _high_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit / float greyscale to 8-bit; a plain convert would clip everything above 255 to white."""
    array = np.asarray(image, dtype=np.float64)
    peak = array.max() if array.size else 0.0
    scale = 255.0 / 65535.0 if peak > 255 else (255.0 if image.mode == "F" and peak <= 1.0 else 1.0)
    return Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8))


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL mode to RGB; transparent pixels land on `background` (white, as most viewers show them)."""
    if image.mode in _HIGH_BIT_MODES:
        image = _high_bit_to_l(image)
    if has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as RGB; DatasetError naming the file if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            # load() inside the try: truncated files only fail when pixels are decoded.
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return to_rgb(upright)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = "not a known image format" if isinstance(error, UnidentifiedImageError) else str(error)
        raise DatasetError(
            f"{path} cannot be read as an image ({reason}): re-save it as PNG or JPEG, or move it out of "
            f"the dataset folder"
        ) from None


def shown_size(image: Image.Image) -> tuple[int, int]:
    """(w, h) of an opened image as shown, after its EXIF orientation; only the header is read."""
    width, height = image.size
    return (height, width) if image.getexif().get(0x0112, 1) in _ROTATED else (width, height)


def upright_size(path: str | Path) -> tuple[int, int]:
    """(w, h) of an image as shown (EXIF orientation applied), from its header; DatasetError if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            return shown_size(opened)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        load_rgb(path)  # raises the DatasetError that names the file and the fix
        raise


def cover_size(size: Size, target: Size) -> Size:
    """The (w, h) that resize_center_crop scales a picture of `size` to: the smallest that covers `target`."""
    w, h = size
    width, height = target
    scale = max(width / w, height / h)
    return max(width, round(w * scale)), max(height, round(h * scale))


def centre_window(resized: Size, target: Size) -> Box:
    """The centred (l, t, r, b) of size `target` inside a picture scaled to `resized`, in scaled pixels."""
    left, top = (resized[0] - target[0]) // 2, (resized[1] - target[1]) // 2
    return left, top, left + target[0], top + target[1]


def random_window(resized: Size, target: Size, u: float, v: float) -> Box:
    """A window of size `target` inside `resized` at offsets drawn from u, v in [0, 1): every offset equally likely."""
    left = int(u * (resized[0] - target[0] + 1))
    top = int(v * (resized[1] - target[1] + 1))
    return left, top, left + target[0], top + target[1]


def _span_read(length: int, resized: int, start: int, stop: int) -> tuple[int, int]:
    """Source pixels [first, last) that LANCZOS reads for output pixels [start, stop) of a scale length → resized."""
    scale = length / resized
    support = 3.0 * max(scale, 1.0)  # Pillow widens the 3-lobe kernel by the scale when shrinking
    return max(0, math.floor(start * scale - support)), min(length, math.ceil(stop * scale + support) + 1)


def _scale_axis(
    part: Image.Image, axis: int, scale: tuple[int, int], span: tuple[int, int], offset: int
) -> Image.Image:
    """Output pixels span=[start, stop) of one axis (0: x, 1: y) of a scale (length → resized) of that axis.

    `part` holds the source from pixel `offset` on along `axis`; the other axis is kept as it is.
    """
    (length, resized), (start, stop) = scale, span
    box = [0.0, 0.0, float(part.size[0]), float(part.size[1])]
    if length == resized:  # this axis is not scaled: a plain crop
        box[axis], box[axis + 2] = start - offset, stop - offset
        return part.crop(tuple(int(v) for v in box))
    ratio = length / resized
    # min(): stop * ratio can land a hair past the edge, and Pillow refuses a box outside the picture.
    box[axis], box[axis + 2] = start * ratio - offset, min(stop * ratio, length) - offset
    size = list(part.size)
    size[axis] = stop - start
    return part.resize(tuple(size), Image.Resampling.LANCZOS, box=tuple(box))


def _resize_window_only(image: Image.Image, resized: Size, window: Box) -> Image.Image:
    """The two LANCZOS passes of `image.resize(resized)` over only what `window` needs, one axis per call."""
    # The same pass order as Pillow's whole-picture resize, since each pass rounds and clips to 8 bits: before
    # Pillow 13 always horizontal first; since, vertical first when the height loses more than twice the
    # pixels the width loses (observed on 13.0, and checked against it in tests/test_dataset_robustness.py).
    (width, height), (new_w, new_h) = image.size, resized
    first = 1 if _PILLOW_PICKS_ORDER and height - new_h > max(0, 2 * (width - new_w)) else 0
    # Cut the source to what the kernels read first: small box offsets lose nothing in Pillow's float32 box.
    x0, x1 = _span_read(width, new_w, window[0], window[2])
    y0, y1 = _span_read(height, new_h, window[1], window[3])
    part = image if (x0, y0, x1, y1) == (0, 0, width, height) else image.crop((x0, y0, x1, y1))
    for axis in (first, 1 - first):
        scale = (image.size[axis], resized[axis])
        part = _scale_axis(part, axis, scale, (window[axis], window[axis + 2]), (x0, y0)[axis])
    return part


def resize_window(image: Image.Image, resized: Size, window: Box) -> Image.Image:
    """`image.resize(resized, LANCZOS).crop(window)`, without allocating all of `resized` when it is large.

    When the window is under 1/FULL_RESIZE_LIMIT of the scaled picture (an extreme aspect ratio, or a big
    upscale), only the window is computed: a 20000×2 strip cropped to 512×512 never becomes 5,120,000×512
    first. Those pixels match the full resize within 2 levels (Pillow takes the window's offset as a 32-bit
    float); every other picture gets exactly the full resize, as before.
    """
    if resized == image.size:
        return image.crop(window)
    window_area = (window[2] - window[0]) * (window[3] - window[1])
    if resized[0] * resized[1] <= FULL_RESIZE_LIMIT * window_area:
        return image.resize(resized, Image.Resampling.LANCZOS).crop(window)
    return _resize_window_only(image, resized, window)


def resize_center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale (LANCZOS) so the image covers width × height, then cut the centre to exactly that size."""
    if image.size == (width, height):
        return image.copy()
    resized = cover_size(image.size, (width, height))
    return resize_window(image, resized, centre_window(resized, (width, height)))


def window_in_source(size: Size, resized: Size, window: Box) -> Box:
    """`window` (in pixels of the picture scaled from `size` to `resized`) in the picture's own pixels, rounded."""
    sx, sy = size[0] / resized[0], size[1] / resized[1]
    left, top, right, bottom = window
    return round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)


def shift_hue(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """uint8 (H, W, 3) RGB with every hue turned by `degrees` on the HSV circle; saturation and value kept."""
    rgb = pixels.astype(np.float32)
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    r, g, b = np.moveaxis(rgb, -1, 0)
    safe = np.where(chroma > 0, chroma, 1.0)  # grey pixels have no hue; any value works for them
    sextant = np.where(
        value == r, (g - b) / safe, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    sextant = (sextant + degrees / 60.0) % 6.0
    # HSV to RGB: channel n of (R, G, B) = (5, 3, 1) is V - C * clip(min(k, 4 - k), 0, 1), k = (n + H) mod 6.
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + sextant[..., None]) % 6.0
    out = value[..., None] - chroma[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def apply_gamma(pixels: np.ndarray, gamma: float) -> np.ndarray:
    """uint8 pixels through the curve 255·(x/255)^gamma: gamma > 1 darkens the mid-tones, black and white stay."""
    curve = np.rint(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return curve[pixels]


def color_augment(pixels: np.ndarray, draws: tuple[float, float, float]) -> np.ndarray:
    """kohya's --color_aug on uint8 (H, W, 3), from three uniform [0, 1) draws: whether, which, how much."""
    apply, which, amount = draws
    if apply >= COLOR_AUG_PROBABILITY:
        return pixels
    if which < 0.5:
        return shift_hue(pixels, (2.0 * amount - 1.0) * HUE_SHIFT)
    low, high = GAMMA_RANGE
    return apply_gamma(pixels, low + (high - low) * amount)


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_captioned_picture(
    folder: Path, stem: str, picture: Image.Image, caption: str, durable: bool = True
) -> tuple[Path, Path]:
    """`folder/stem.png` and `folder/stem.txt`, each written atomically; returns both paths."""
    png = write_bytes_atomic(folder / f"{stem}.png", png_bytes(picture), durable)
    txt = write_bytes_atomic(folder / f"{stem}.txt", caption.encode("utf-8"), durable)
    return png, txt
