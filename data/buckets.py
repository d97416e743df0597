"""Aspect-ratio buckets as kohya builds them: the bucket list, the bucket of an image, the fit onto it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from data.errors import DatasetError, LoraSmithError

Size = tuple[int, int]
Box = tuple[int, int, int, int]


class BucketFit(NamedTuple):
    """How an image becomes its bucket: resize to `resized`, then cut `crop` (l, t, r, b) out of that."""

    resized: Size
    crop: Box


def _check_settings(max_reso: Size, min_size: int, max_size: int, step: int) -> None:
    if step < 1:
        raise LoraSmithError(f"bucket step {step} must be at least 1 pixel (kohya's default is 64)")
    if min(max_reso) < 1:
        raise LoraSmithError(f"bucket max_reso {tuple(max_reso)} must be two positive sizes, e.g. (512, 512)")
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if value % step or value < step:
            down, up = value - value % step, value - value % step + step
            fix = f"use {down} or {up}" if down >= step else f"use {up}"
            raise LoraSmithError(f"bucket {name} {value} is not a positive multiple of step {step}: {fix}")
    if min_size > min(max_reso):
        raise LoraSmithError(
            f"bucket min_size {min_size} is larger than the training resolution {tuple(max_reso)}: "
            f"lower min_size to {min(max_reso) - min(max_reso) % step} or less"
        )
    if max_size < max(max_reso):
        raise LoraSmithError(
            f"bucket max_size {max_size} is smaller than the training resolution {tuple(max_reso)}: "
            f"raise max_size to {-(-max(max_reso) // step) * step} or more"
        )


def make_buckets(
    max_reso: Size = (512, 512), min_size: int = 256, max_size: int = 1024, step: int = 64
) -> list[Size]:
    """kohya's bucket list, sorted: (w, h) multiples of `step` in [min_size, max_size], w·h ≤ the area of max_reso.

    For each width from min_size to max_size, the tallest height within the area (capped at max_size),
    with its transpose; plus the largest square. Same list as kohya's `make_bucket_resolutions`.
    """
    _check_settings(max_reso, min_size, max_size, step)
    max_area = max_reso[0] * max_reso[1]
    side = math.isqrt(max_area) // step * step
    found = {(side, side)}
    for width in range(min_size, max_size + 1, step):
        height = min(max_size, max_area // width // step * step)
        if height >= min_size:
            found.update({(width, height), (height, width)})
    return sorted(found)


def choose_bucket(size: Size, buckets: list[Size]) -> Size:
    """The bucket for an image of `size` (w, h): itself if listed, else the nearest aspect ratio (first on ties)."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"image size {size} must be positive")
    if (width, height) in buckets:
        return width, height
    ratio = width / height
    return min(buckets, key=lambda bucket: abs(bucket[0] / bucket[1] - ratio))


def _round_to_step(value: float, step: int) -> int:
    rounded = int(value + 0.5)
    return rounded - rounded % step


def _area_fitted_size(size: Size, max_area: int, step: int) -> Size:
    """kohya's downscale of a too-large image to about `max_area`, one side a multiple of `step`."""
    width, height = size
    ratio = width / height
    fitted_w = math.sqrt(max_area * ratio)
    fitted_h = max_area / fitted_w
    # Round either the width or the height to the step, whichever keeps the aspect ratio closer.
    by_width = _round_to_step(fitted_w, step)
    height_for_width = _round_to_step(by_width / ratio, step)
    by_height = _round_to_step(fitted_h, step)
    width_for_height = _round_to_step(by_height * ratio, step)
    error_w = abs(by_width / height_for_width - ratio) if height_for_width else math.inf
    error_h = abs(width_for_height / by_height - ratio) if by_height else math.inf
    if error_w < error_h:
        return by_width, int(by_width / ratio + 0.5)
    return int(by_height * ratio + 0.5), by_height


def no_upscale_bucket(size: Size, max_reso: Size = (512, 512), step: int = 64) -> Size:
    """kohya's `bucket_no_upscale` bucket: the image (shrunk to the max_reso area if larger) rounded down to `step`.

    min/max sizes do not apply, as in kohya. DatasetError if a side ends up below one step.
    """
    width, height = size
    max_area = max_reso[0] * max_reso[1]
    fitted = _area_fitted_size(size, max_area, step) if width * height > max_area else (width, height)
    bucket = (fitted[0] - fitted[0] % step, fitted[1] - fitted[1] % step)
    if min(bucket) < step:
        raise DatasetError(
            f"a {width}×{height} image is under {step} px on one side (after fitting the {max_area}-pixel "
            f"area), so no bucket holds it without upscaling: remove it, or train without no_upscale"
        )
    return bucket


def bucket_resize_box(size: Size, bucket: Size) -> BucketFit:
    """kohya's fit of an image of `size` onto `bucket`: scale until the bucket is covered, crop the centre.

    Unlike kohya's no_upscale path, which keeps the image at its area-fitted size and crops up to
    step - 1 px off both sides, the scale here is always the smallest that covers the bucket, so at most
    one side is cropped; for a no_upscale bucket that scale is ≤ 1, so nothing is upscaled either.
    """
    width, height = size
    bucket_w, bucket_h = bucket
    if width / height > bucket_w / bucket_h:  # wider than the bucket: match heights, crop the sides
        scale = bucket_h / height
    else:
        scale = bucket_w / width
    resized = (max(bucket_w, int(width * scale + 0.5)), max(bucket_h, int(height * scale + 0.5)))
    left, top = (resized[0] - bucket_w) // 2, (resized[1] - bucket_h) // 2
    return BucketFit(resized, (left, top, left + bucket_w, top + bucket_h))


def bucket_chooser(
    max_side: int, min_size: int, max_size: int, step: int, no_upscale: bool = False
) -> Callable[[Size], Size]:
    """The function that maps a picture's (w, h) to its bucket: kohya's list for an area of max_side²
    (nearest aspect ratio), or with `no_upscale` the picture's own size rounded down to `step`."""
    if no_upscale:
        return lambda size: no_upscale_bucket(size, (max_side, max_side), step)
    buckets = make_buckets((max_side, max_side), min_size, max_size, step)
    return lambda size: choose_bucket(size, buckets)
