"""The captioner interface, and captioning a whole list of pictures in batches with a progress bar."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from data.errors import LoraSmithError
from data.images import load_rgb, to_rgb

ImageSource = Image.Image | str | Path


class CaptionerError(LoraSmithError):
    """A captioning model that cannot be found, loaded or used; the message names the source and the fix."""


class Captioner(ABC):
    """Turns pictures into caption text: a sentence (BLIP, GIT) or comma-separated tags (WD14)."""

    name: str = "captioner"
    batch_size: int = 8

    @abstractmethod
    def caption(self, images: list[Image.Image]) -> list[str]:
        """One batch: one caption per picture, in order."""


def as_rgb(images: list[Image.Image]) -> list[Image.Image]:
    """The pictures as RGB; transparent pixels become white, as the taggers and the dataset loader do."""
    return [to_rgb(image) for image in images]


def _load(item: ImageSource) -> Image.Image:
    return item if isinstance(item, Image.Image) else load_rgb(item)


def caption_all(
    captioner: Captioner, images: Sequence[ImageSource], batch_size: int | None = None
) -> list[str]:
    """Caption pictures or image files in batches (default: the captioner's), with a progress bar.

    Files are opened one batch at a time (upright, as RGB), so a large folder never sits in memory.
    """
    size = batch_size or captioner.batch_size
    if size < 1:
        raise CaptionerError(f"batch_size={size} must be >= 1")
    captions: list[str] = []
    with tqdm(total=len(images), desc=f"captioning ({captioner.name})", unit="img") as bar:
        for start in range(0, len(images), size):
            batch = [_load(item) for item in images[start : start + size]]
            captions.extend(captioner.caption(batch))
            bar.update(len(batch))
    return captions
