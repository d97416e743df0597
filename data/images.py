"""Loading pictures as upright RGB, resizing them to a training size, and writing them with their captions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data.atomic import write_bytes_atomic
from data.errors import DatasetError

WHITE = (255, 255, 255)
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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


def resize_center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale (LANCZOS) so the image covers width × height, then cut the centre to exactly that size."""
    w, h = image.size
    if (w, h) == (width, height):
        return image.copy()
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return resized.crop((left, top, left + width, top + height))


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
