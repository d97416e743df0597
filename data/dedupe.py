"""Duplicate pictures: byte-identical files, and near-identical ones by a 64-bit difference hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from data.scan import SourceImage

# Set bits in each byte value: popcount without numpy >= 2's bitwise_count.
_BITS_IN_BYTE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
# dHash only sees brightness steps, so flat or same-gradient pictures of different colours share a hash
# (a plain red frame and a plain grey one both hash to 0). Near duplicates must also agree in colour:
# mean |difference| of their 8×8 RGB thumbnails at most this, out of 255. Re-encoding changes it by ~1–3.
COLOUR_TOLERANCE = 16


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: greyscale 9×8 box-downscale; bit set where a pixel is brighter than its left one."""
    small = image.convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.int16)
    brighter = pixels[:, 1:] > pixels[:, :-1]
    return int.from_bytes(np.packbits(brighter).tobytes(), "big")


def thumbnail(image: Image.Image) -> bytes:
    """8×8 RGB box-downscale of `image` as 192 bytes, for the colour check of near duplicates."""
    return image.convert("RGB").resize((8, 8), Image.Resampling.BOX).tobytes()


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def colour_difference(a: bytes, b: bytes) -> float:
    """Mean |difference| of two thumbnails, 0–255."""
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


def _distances(hashes: np.ndarray, value: int) -> np.ndarray:
    """Hamming distance from `value` to each uint64 in `hashes`."""
    xor = hashes ^ np.uint64(value)
    return _BITS_IN_BYTE[xor.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.int64)


@dataclass(frozen=True)
class Duplicate:
    """The picture at `path` is the same as the one at `kept`, which comes first in path order and stays."""

    path: Path
    kept: Path
    kind: Literal["exact", "near"]
    distance: int  # Hamming distance of the two difference hashes, 0–64

    @property
    def reason(self) -> str:
        """A short sentence for the report."""
        if self.kind == "exact":
            return f"same bytes as {self.kept}"
        return f"near-identical to {self.kept} ({self.distance} of 64 hash bits differ)"


def _nearest_keeper(image: SourceImage, kept: list[SourceImage], hashes: np.ndarray, threshold: int):
    """The kept image with the closest hash within `threshold` and a similar colour, or None."""
    if not kept:
        return None
    distances = _distances(hashes[: len(kept)], image.dhash)
    for index in np.argsort(distances, kind="stable"):
        if distances[index] > threshold:
            return None
        if colour_difference(kept[index].thumbnail, image.thumbnail) <= COLOUR_TOLERANCE:
            return kept[index]
    return None


def find_duplicates(images: list[SourceImage], near_threshold: int = 4) -> list[Duplicate]:
    """Exact (same sha256) and near (dHash distance ≤ `near_threshold`, similar colour) duplicates.

    Greedy grouping, pictures with a caption first (keeping them keeps their caption), then in path order:
    an image joins the group of the nearest earlier kept image (ties: the
    first), else it is kept and starts a group. So every reported pair is within the threshold itself, and
    no chain A≈B≈C puts C with a distant A. A file byte-identical to a group member joins that group.
    """
    if not 0 <= near_threshold <= 64:
        raise ValueError(f"near_threshold {near_threshold} must be between 0 and 64 bits")
    ordered = sorted(images, key=lambda image: (image.caption is None, image.path))
    kept: list[SourceImage] = []
    kept_hashes = np.zeros(len(ordered), dtype=np.uint64)
    group_of_sha: dict[str, SourceImage] = {}
    found: list[Duplicate] = []
    for image in ordered:
        keeper = group_of_sha.get(image.sha256) or _nearest_keeper(image, kept, kept_hashes, near_threshold)
        if keeper is None:
            kept_hashes[len(kept)] = image.dhash
            kept.append(image)
            group_of_sha[image.sha256] = image
            continue
        group_of_sha.setdefault(image.sha256, keeper)
        kind = "exact" if image.sha256 == keeper.sha256 else "near"
        found.append(Duplicate(image.path, keeper.path, kind, hamming(keeper.dhash, image.dhash)))
    return found
