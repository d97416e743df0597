"""Where a training picture's window lies, and the window itself: the picture scaled to its bucket's fit (or to
cover resolution × resolution), then its centre window or one at a random shift. The loss mask goes through
the same window as its picture (train/dataset.py caches what can be cached)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from data.buckets import Box, Size, bucket_resize_box
from data.images import centre_window, cover_size, load_rgb, random_window, resize_window, window_in_source
from train.config import DatasetConfig
from train.errors import ConfigError
from train.loss_mask import alpha_mask, folder_mask, mask_file


class PictureWindows:
    """`buckets`: each picture's bucket (w, h) with enable_bucket, else empty; `picture_size(path)`: its
    upright (w, h) from the header."""

    def __init__(
        self, config: DatasetConfig, buckets: dict[Path, Size], picture_size: Callable[[Path], Size]
    ):
        self.config = config
        self.buckets = buckets
        self.picture_size = picture_size

    def scaling(self, path: Path, size: Size) -> tuple[Size, Size]:
        """(scaled size, output size) for a picture of `size`: its bucket's fit, else the R × R cover."""
        bucket = self.buckets.get(path)
        if bucket is None:
            target = (self.config.resolution, self.config.resolution)
            return cover_size(size, target), target
        return bucket_resize_box(size, bucket).resized, bucket

    def _window(self, image: Image.Image, path: Path, shift: tuple[float, float] | None) -> np.ndarray:
        resized, target = self.scaling(path, image.size)
        window = centre_window(resized, target) if shift is None else random_window(resized, target, *shift)
        # The window is chosen first and only it is scaled: an extreme picture never allocates its whole scale.
        return np.array(resize_window(image, resized, window), dtype=np.uint8)  # writable, for torch

    def render(self, path: Path, shift: tuple[float, float] | None = None) -> np.ndarray:
        """uint8 (H, W, 3): the centre window of the scaled picture, or the one at `shift` (u, v in [0, 1))."""
        return self._window(load_rgb(path), path, shift)

    def render_mask(self, path: Path, is_reg: bool, shift: tuple[float, float] | None = None) -> np.ndarray:
        """uint8 (H, W): the picture's loss mask, scaled and cropped with the picture's own window.

        From `mask_dir`, a regularization picture without a mask of its own trains everywhere.
        """
        size = self.picture_size(path)
        if not self.config.mask_dir:
            image = alpha_mask(path)
        elif is_reg and mask_file(path, Path(self.config.mask_dir)) is None:
            image = Image.new("L", size, 255)
        else:
            image = folder_mask(path, Path(self.config.mask_dir), size)
        return self._window(image, path, shift)

    def crop_plan(self, path: Path) -> tuple[Size, Box]:
        """The output (w, h) of a picture and its centre crop (l, t, r, b) in its own upright pixels."""
        if self.config.random_crop:
            raise ConfigError(
                "dataset.random_crop=true draws a new crop every epoch: there is no one crop plan"
            )
        size = self.picture_size(path)
        resized, target = self.scaling(path, size)
        return target, window_in_source(size, resized, centre_window(resized, target))
