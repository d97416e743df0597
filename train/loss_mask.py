"""Masked loss (kohya's `--masked_loss`): each picture's mask weighs its loss, pixel by pixel.

The mask is the picture's alpha channel (`dataset.alpha_mask`, kohya's dataset option of that name) or a
picture of the same name and size in `dataset.mask_dir` (its red channel, as kohya reads its conditioning
images): white trains fully, black not at all. A picture without an alpha channel trains everywhere. The
mask is scaled and cropped with its picture's window and flipped with it, then averaged down to the latent
grid ("area"), and the loss is multiplied by it before its mean, as kohya does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from data.errors import DatasetError
from data.folders import IMAGE_EXTENSIONS
from data.images import has_alpha, upright_size

log = logging.getLogger(__name__)


def _open_upright(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{path} cannot be read as a mask ({error}): re-save it as PNG") from None


def alpha_mask(picture: Path) -> Image.Image:
    """The picture's alpha channel as an L image (fully opaque when it has none)."""
    image = _open_upright(picture)
    if not has_alpha(image):
        return Image.new("L", image.size, 255)
    return image.convert("RGBA").getchannel("A")


def mask_file(picture: Path, mask_dir: Path) -> Path | None:
    """`mask_dir/<picture stem>.<any image extension>`, or None."""
    for extension in IMAGE_EXTENSIONS:
        for candidate in (
            mask_dir / f"{picture.stem}{extension}",
            mask_dir / f"{picture.stem}{extension.upper()}",
        ):
            if candidate.is_file():
                return candidate
    return None


def _missing(picture: Path, mask_dir: Path) -> str:
    return (
        f"{picture} has no mask in {mask_dir} (expected {picture.stem}.png): add one, white where the "
        "picture should train, or set dataset.masked_loss=false"
    )


def _misfit(path: Path, mask_size: tuple[int, int], picture: Path, size: tuple[int, int]) -> str:
    return (
        f"mask {path} is {mask_size[0]}x{mask_size[1]} but its picture {picture.name} is {size[0]}x{size[1]}: "
        "a mask must have its picture's size"
    )


def folder_mask(picture: Path, mask_dir: Path, size: tuple[int, int]) -> Image.Image:
    """The red channel of the picture's mask in `mask_dir`; DatasetError when it is missing or sized wrong."""
    path = mask_file(picture, mask_dir)
    if path is None:
        raise DatasetError(_missing(picture, mask_dir))
    image = _open_upright(path).convert("RGB").getchannel("R")
    if image.size != size:
        raise DatasetError(_misfit(path, image.size, picture, size))
    return image


def mask_problem(picture: Path, mask_dir: Path) -> str | None:
    """What is wrong with a training picture's mask in `mask_dir` (missing, unreadable, sized unlike its
    picture), from the headers alone; None when it fits."""
    path = mask_file(picture, mask_dir)
    if path is None:
        return _missing(picture, mask_dir)
    try:
        mask_size = upright_size(path)
    except DatasetError:
        return f"{path} cannot be read as a mask: re-save it as PNG"
    size = upright_size(picture)
    return None if mask_size == size else _misfit(path, mask_size, picture, size)


def check_masks(pictures: list[Path], mask_dir: Path) -> None:
    """Before the first step: every training picture has a fitting mask in `mask_dir`. Each problem is
    logged; one DatasetError names the first (and how many more), so a run does not stop hours in when a
    sample without a mask is drawn. Regularization pictures are not asked (without a mask they train
    everywhere)."""
    problems = [why for why in (mask_problem(picture, mask_dir) for picture in pictures) if why]
    if not problems:
        return
    for why in problems[1:]:
        log.warning("%s", why)
    more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
    raise DatasetError(problems[0] + more)


def mask_tensor(array: np.ndarray, flip: bool) -> torch.Tensor:
    """uint8 (H, W) → float (1, H, W) in [0, 1], mirrored with its picture."""
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array)).float().div(255.0)[None]


def apply_loss_mask(per_element: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss (B, C, h, w) weighed by masks (B, 1, H, W), averaged down to the latent grid."""
    weights = F.interpolate(
        mask.to(per_element.device, per_element.dtype), size=per_element.shape[2:], mode="area"
    )
    return per_element * weights
