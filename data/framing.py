"""One picture → its training frame, as `crop.mode` says: centre or focus crop at a fixed size, kohya's
buckets, or the picture as it is. The crop box is reported in source pixels for the manifest."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from data.buckets import bucket_chooser, bucket_resize_box
from data.crop import Box, Size, center_crop_box, crop_and_resize, focus_crop_box
from data.prepare_config import CropConfig


@dataclass(frozen=True)
class Framed:
    """A framed picture, the box of the source it shows (l, t, r, b) and its size as a bucket (w, h)."""

    picture: Image.Image
    box: Box
    bucket: Size


class Framer:
    """Frames pictures for one CropConfig (the bucket list is built once)."""

    def __init__(self, crop: CropConfig) -> None:
        self.crop = crop
        self.target = (crop.width, crop.height)
        if crop.mode == "buckets":
            self.bucket_for = bucket_chooser(
                crop.max_resolution,
                crop.min_bucket_reso,
                crop.max_bucket_reso,
                crop.bucket_reso_steps,
                crop.bucket_no_upscale,
            )

    def frame(self, image: Image.Image) -> Framed:
        """`image` cropped and resized as configured."""
        size = image.size
        mode = self.crop.mode
        if mode == "none":
            return Framed(image, (0, 0, *size), size)
        if mode in ("center", "focus"):
            box = (
                center_crop_box(size, self.target) if mode == "center" else focus_crop_box(image, self.target)
            )
            return Framed(crop_and_resize(image, box, self.target), box, self.target)
        bucket = self.bucket_for(size)
        fit = bucket_resize_box(size, bucket)
        scale_x, scale_y = size[0] / fit.resized[0], size[1] / fit.resized[1]
        left, top, right, bottom = fit.crop
        box = (round(left * scale_x), round(top * scale_y), round(right * scale_x), round(bottom * scale_y))
        return Framed(crop_and_resize(image, box, bucket), box, bucket)
