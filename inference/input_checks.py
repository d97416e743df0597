"""The render commands' file inputs, checked before the model loads: one line that names the key and the file."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from data.typed_config import ConfigError


def check_image_file(key: str, path: str | None) -> None:
    """`path` (when given) is a picture that decodes to its last byte."""
    if path is None:
        return
    if not Path(path).is_file():
        raise ConfigError(f"{key}={path} is not a file: give the image to start from")
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # Pillow raises many types on a broken file; each means "not a picture"
        raise ConfigError(f"{key}={path} cannot be read as an image ({error}): re-save it as PNG") from None


def check_output_folder(key: str, path: str) -> None:
    """`path` is a folder or can become one (nothing of that name but a folder)."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{key}={path} is a file: give a folder for the images")


def check_finite(**values: float) -> None:
    """Each value is a number, not NaN or infinity."""
    for key, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
