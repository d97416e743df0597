"""A ControlNet unit's control map sized to the picture, as A1111's ControlNet extension sizes it: resize modes
"Just Resize", "Crop and Resize", "Resize and Fill", its edge-keeping resize, and pixel-perfect resolution."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
# Older names the extension still accepts for the last two.
RESIZE_MODE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Envelope (Outer Fit)": "Resize and Fill",
}


def hwc3(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) → (H, W, 3); alpha is composed over white."""
    if image.dtype != np.uint8:
        raise ValueError(f"control images are 8-bit, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.concatenate([image] * 3, axis=2)
    if channels != 4:
        raise ValueError(f"control images have 1, 3 or 4 channels, got {channels}")
    colour, alpha = image[:, :, :3].astype(np.float32), image[:, :, 3:].astype(np.float32) / 255.0
    return (colour * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def pixel_perfect_resolution(image: np.ndarray, height: int, width: int, resize_mode: str) -> int:
    """The preprocessor resolution at which the image's short side lands on the picture as the resize will."""
    raw_h, raw_w = image.shape[:2]
    scales = (height / raw_h, width / raw_w)
    k = min(scales) if resize_mode == "Resize and Fill" else max(scales)
    return int(np.round(k * min(raw_h, raw_w)))


_THIN = [np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]]), np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]])]
_PRUNE = [
    np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]]),
    np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]]),
]
_THIN_KERNELS = [np.rot90(k, r).astype(np.int32) for r in range(4) for k in _THIN]
_PRUNE_KERNELS = [np.rot90(k, r).astype(np.int32) for r in range(4) for k in _PRUNE]


def _strip(edges: np.ndarray, kernels: list[np.ndarray]) -> bool:
    """Clear, in place, the pixels each hit-or-miss kernel matches in turn; True when none matched."""
    done = True
    for kernel in kernels:
        hits = np.where(cv2.morphologyEx(edges, cv2.MORPH_HITMISS, kernel) > 127)
        edges[hits] = 0
        done = done and hits[0].size == 0
    return done


def thin_edges(edges: np.ndarray, prune: bool) -> np.ndarray:
    """Thin a binary (H, W) uint8 edge map to one-pixel lines (at most 32 passes), then drop spur ends."""
    edges = edges.copy()
    for _ in range(32):
        if _strip(edges, _THIN_KERNELS):
            break
    if prune:
        _strip(edges, _PRUNE_KERNELS)
    return edges


def suppress_non_maxima(gray: np.ndarray) -> np.ndarray:
    """Keep a pixel where it is the maximum along some line through it (horizontal, vertical, diagonals)."""
    lines = [np.zeros((3, 3), np.uint8) for _ in range(4)]
    lines[0][1, :] = lines[1][:, 1] = 1
    np.fill_diagonal(lines[2], 1)
    np.fill_diagonal(np.fliplr(lines[3]), 1)
    kept = np.zeros_like(gray)
    for line in lines:
        np.putmask(kept, cv2.dilate(gray, kernel=line) == gray, gray)
    return kept


def edge_keeping_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 → size=(width, height), as the extension resizes control maps.

    Maps of 3 to 199 colours (segmentation) are resized nearest; others area-down / cubic-up. Black-and-white
    maps stay binary (Otsu threshold); one-pixel edge maps are also thinned back to one pixel.
    """
    width, height = size
    if image.shape[:2] == (height, width):
        return image
    new_area, old_area = width * height, image.shape[0] * image.shape[1]
    colours = len(np.unique(image.reshape(-1, image.shape[2]), axis=0))
    binary = colours == 2 and image.min() < 16 and image.max() > 240
    one_pixel = False
    if binary:
        opened = cv2.dilate(cv2.erode(image, np.ones((3, 3), np.uint8)), np.ones((3, 3), np.uint8))
        one_pixel = np.count_nonzero(opened < image) * 2 > np.count_nonzero(image > 127)
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if new_area < old_area else cv2.INTER_CUBIC
    resized = cv2.resize(image, size, interpolation=interpolation)
    if not binary:
        return resized
    gray = np.mean(resized.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
    if one_pixel:
        gray = suppress_non_maxima(gray)
    _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if one_pixel:
        gray = thin_edges(gray, prune=new_area > old_area)
    return np.stack([gray] * 3, axis=2)


def fit_control_map(image: np.ndarray, height: int, width: int, resize_mode: str) -> np.ndarray:
    """A control map (H, W, C) uint8 sized to (height, width, 3) by the unit's resize mode.

    Just Resize stretches; Crop and Resize covers the picture and crops the middle; Resize and Fill fits inside
    and fills the rest with the median colour of the map's border.
    """
    image = hwc3(image)
    if resize_mode == "Just Resize":
        return edge_keeping_resize(image, (width, height))
    old_h, old_w = image.shape[:2]
    fill = resize_mode == "Resize and Fill"
    k = (min if fill else max)(height / old_h, width / old_w)
    scaled = edge_keeping_resize(image, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w = scaled.shape[:2]
    if fill:
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
        canvas = np.tile(np.median(border, axis=0).astype(image.dtype)[None, None], (height, width, 1))
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top : top + new_h, left : left + new_w] = scaled
        return canvas
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def control_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float in [0, 1], as the ControlNet reads its hint."""
    # A copy: the map may be a read-only view of a Pillow image, which torch warns about.
    return torch.from_numpy(np.array(image, copy=True)).float().div(255.0).permute(2, 0, 1)[None]
