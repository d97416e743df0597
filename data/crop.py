"""Crop geometry for a fixed output size: the centre window, the most detailed window, and the cut itself."""

from __future__ import annotations

import numpy as np
from PIL import Image

from data.images import to_rgb

Size = tuple[int, int]
Box = tuple[int, int, int, int]

# Detail is measured on a copy whose longer side is at most this many pixels: plenty to locate a subject.
ANALYSIS_SIDE = 256


def _check_size(size: Size, what: str) -> tuple[int, int]:
    width, height = size
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"{what} {size} must be two positive whole numbers of pixels")
    return int(width), int(height)


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, in exact integer arithmetic."""
    return (2 * numerator + denominator) // (2 * denominator)


def window_size(size: Size, target: Size) -> Size:
    """The largest (width, height) with the aspect ratio of `target` (±1 px) that fits in `size`; ≥ 1 px."""
    width, height = _check_size(size, "image size")
    target_w, target_h = _check_size(target, "target size")
    if width * target_h >= height * target_w:  # the image is wider than the target: keep its full height
        return min(width, max(1, _round_div(height * target_w, target_h))), height
    return width, min(height, max(1, _round_div(width * target_h, target_w)))


def center_crop_box(size: Size, target: Size) -> Box:
    """The centred `window_size` box (left, top, right, bottom) inside an image of `size`."""
    width, height = _check_size(size, "image size")
    box_w, box_h = window_size(size, target)
    left, top = (width - box_w) // 2, (height - box_h) // 2
    return left, top, left + box_w, top + box_h


def _edge_energy(image: Image.Image) -> np.ndarray:
    """Per-pixel Σ|luminance difference| with the 4 neighbours, on a copy at most ANALYSIS_SIDE px long."""
    width, height = image.size
    factor = min(1.0, ANALYSIS_SIDE / max(width, height))
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Shrink first when Pillow can (it resamples alpha premultiplied), so full-size work stays minimal.
    source = image if image.mode in ("RGB", "RGBA", "L", "LA") else to_rgb(image)
    small = to_rgb(source.resize(small_size, Image.Resampling.BOX, reducing_gap=2.0)).convert("L")
    luma = np.asarray(small, dtype=np.int64)
    energy = np.zeros_like(luma)
    across, down = np.abs(np.diff(luma, axis=1)), np.abs(np.diff(luma, axis=0))
    # Each edge counts for the pixels on both of its sides, so the measure has no left/up bias.
    energy[:, :-1] += across
    energy[:, 1:] += across
    energy[:-1, :] += down
    energy[1:, :] += down
    return energy


def _best_offset(profile: np.ndarray, window: int) -> int | None:
    """Start of the `window`-long run of `profile` with the largest sum, ties to the most central one;
    None when the central position itself is among the best."""
    sums = np.cumsum(np.concatenate(([0], profile)))
    totals = sums[window:] - sums[:-window]
    best = totals == totals.max()
    centre = (len(profile) - window) / 2
    if best[int(np.floor(centre))] and best[int(np.ceil(centre))]:
        return None
    candidates = np.flatnonzero(best)
    return int(candidates[np.argmin(np.abs(candidates - centre))])


def focus_crop_box(image: Image.Image, target: Size) -> Box:
    """The `window_size` box, slid along the image's longer-than-needed side, that holds the most detail.

    Detail is edge energy, Σ|∇ luminance| (absolute differences between neighbouring pixels), on a copy
    downscaled to ANALYSIS_SIDE px: a subject's edges and texture score high, flat backgrounds (sky, wall,
    studio backdrop) score near zero. Every window position is scored at once with prefix sums, so an
    image costs one small resize and a few array passes. Equal scores, such as a uniform image, give the
    most central window, i.e. `center_crop_box`.
    """
    width, height = image.size
    box_w, box_h = window_size(image.size, target)
    if (box_w, box_h) == (width, height):
        return 0, 0, width, height
    energy = _edge_energy(image)
    horizontal = box_w < width
    profile = energy.sum(axis=0 if horizontal else 1)
    full, box = (width, box_w) if horizontal else (height, box_h)
    small_window = min(len(profile), max(1, round(box * len(profile) / full)))
    small_slack, slack = len(profile) - small_window, full - box
    best = _best_offset(profile, small_window) if small_slack else None
    # Scale the slack, not the offset, so the first and last positions map exactly onto the edges.
    offset = slack // 2 if best is None else round(best * slack / small_slack)
    if horizontal:
        return offset, 0, offset + box_w, box_h
    return 0, offset, box_w, offset + box_h


def crop_and_resize(image: Image.Image, box: Box, target: Size) -> Image.Image:
    """Cut `box` out of `image` and resize it (Lanczos) to `target`, in one resampling pass."""
    width, height = image.size
    left, top, right, bottom = box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"crop box {box} is not a non-empty box inside the {width}×{height} image")
    target = _check_size(target, "target size")
    if image.mode in ("1", "P", "PA"):
        # Pillow resamples palette and bilevel images with NEAREST only, whatever filter is asked for.
        image = to_rgb(image)
    if (right - left, bottom - top) == target:
        return image.crop(box)
    return image.resize(target, Image.Resampling.LANCZOS, box=box)
