"""A small deterministic concept dataset: a magenta star in a yellow ring, drawn on plain backgrounds.

It stands in for the full toy world: a trigger word plus a class (`sls toy`) that training can learn, and
optional regularization pictures of other plain shapes of the same class. Same arguments → same bytes.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data.errors import DatasetError
from data.folders import make_subset_folder

STAR_COLOR = (225, 30, 200)  # magenta
RING_COLOR = (250, 215, 30)  # yellow
# Backgrounds of the concept avoid its own colours, so the star always stands out.
CONCEPT_BACKGROUNDS = {
    "blue": (40, 80, 200),
    "green": (50, 150, 70),
    "cyan": (60, 190, 200),
    "gray": (128, 128, 128),
    "white": (238, 238, 238),
    "black": (22, 22, 22),
    "orange": (230, 130, 40),
    "brown": (120, 80, 45),
}
# Outer star radius as a fraction of the image side; the ring reaches ~1.2× that.
SIZES = {"small": 0.2, "medium": 0.28, "large": 0.37}
REG_COLORS = {
    "red": (210, 40, 40),
    "green": (50, 150, 70),
    "blue": (40, 80, 200),
    "orange": (230, 130, 40),
    "cyan": (60, 190, 200),
    "white": (238, 238, 238),
    "black": (22, 22, 22),
    "gray": (128, 128, 128),
}
REG_SHAPES = ("circle", "square", "triangle")
_SUPERSAMPLE = 4  # draw large, then downscale: smooth edges without anti-aliasing support in ImageDraw
_RING_OUTER = 1.2


def _jitter(color: tuple[int, int, int], rng: np.random.Generator, amount: int = 12) -> tuple[int, ...]:
    """A slightly different shade, so plain backgrounds are not all identical."""
    offsets = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + o, 0, 255)) for c, o in zip(color, offsets, strict=True))


def _star_points(cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Ten vertices of a five-pointed star, first point up (rotated by `angle` radians)."""
    inner = radius * 0.4
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else inner
        theta = angle - math.pi / 2 + k * math.pi / 5
        points.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
    return points


def _downscale(canvas: Image.Image, size: int) -> Image.Image:
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def draw_concept(rng: np.random.Generator, size: int) -> tuple[Image.Image, str, str]:
    """One picture of the concept; returns (image, background name, size name)."""
    background = str(rng.choice(list(CONCEPT_BACKGROUNDS)))
    size_name = str(rng.choice(list(SIZES)))
    big = size * _SUPERSAMPLE
    radius = SIZES[size_name] * big
    extent = radius * _RING_OUTER
    cx, cy = (float(rng.uniform(extent, big - extent)) for _ in range(2))
    angle = float(rng.uniform(-0.25, 0.25))
    canvas = Image.new("RGB", (big, big), _jitter(CONCEPT_BACKGROUNDS[background], rng))
    draw = ImageDraw.Draw(canvas)
    ring_width = max(1, round(radius * 0.12))
    box = (cx - extent, cy - extent, cx + extent, cy + extent)
    draw.ellipse(box, outline=RING_COLOR, width=ring_width)
    draw.polygon(_star_points(cx, cy, radius, angle), fill=STAR_COLOR)
    return _downscale(canvas, size), background, size_name


def draw_reg_shape(rng: np.random.Generator, size: int) -> tuple[Image.Image, str, str, str]:
    """One plain shape of another kind; returns (image, colour name, shape name, background name)."""
    color = str(rng.choice(list(REG_COLORS)))
    background = str(rng.choice([name for name in REG_COLORS if name != color]))
    shape = str(rng.choice(REG_SHAPES))
    big = size * _SUPERSAMPLE
    half = float(rng.uniform(0.18, 0.4)) * big
    cx, cy = (float(rng.uniform(half, big - half)) for _ in range(2))
    canvas = Image.new("RGB", (big, big), _jitter(REG_COLORS[background], rng))
    draw = ImageDraw.Draw(canvas)
    fill = REG_COLORS[color]
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    return _downscale(canvas, size), color, shape, background


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a hidden temp file and a rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_pair(folder: Path, stem: str, image: Image.Image, caption: str) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    _write_atomic(folder / f"{stem}.png", buffer.getvalue())
    _write_atomic(folder / f"{stem}.txt", (caption + "\n").encode("utf-8"))


def _check_args(
    n_images: int, repeats: int, size: int, trigger: str, class_word: str, reg_images: int
) -> None:
    if n_images < 1:
        raise DatasetError(f"toy dataset: n_images={n_images} must be at least 1 (dataset.toy_images)")
    if repeats < 1:
        raise DatasetError(f"toy dataset: repeats={repeats} must be at least 1 (dataset.toy_repeats)")
    if size < 8:
        raise DatasetError(f"toy dataset: size={size} is too small to draw on; use 8 pixels or more")
    if not trigger.strip() or not class_word.strip():
        raise DatasetError(
            "toy dataset: trigger and class_word must be non-empty words, e.g. `sls` and `toy`"
        )
    if reg_images < 0:
        raise DatasetError(f"toy dataset: reg_images={reg_images} must be 0 or more")


def write_toy_concept_dataset(
    root: str | Path,
    n_images: int = 12,
    repeats: int = 10,
    seed: int = 0,
    size: int = 64,
    trigger: str = "sls",
    class_word: str = "toy",
    reg_images: int = 0,
) -> tuple[Path, Path | None]:
    """Write `root/train/<repeats>_<trigger> <class_word>/` (+ `root/reg/1_<class_word>/`); return both dirs."""
    _check_args(n_images, repeats, size, trigger, class_word, reg_images)
    root = Path(root)
    width = max(3, len(str(max(n_images, reg_images) - 1)))
    train_dir = root / "train"
    folder = make_subset_folder(train_dir, repeats, trigger, class_word)
    # Separate streams: adding reg pictures never changes the concept pictures.
    rng = np.random.default_rng([seed, 0])
    for i in range(n_images):
        image, background, size_name = draw_concept(rng, size)
        _write_pair(
            folder, f"{i:0{width}d}", image, f"{trigger} {class_word}, {background} background, {size_name}"
        )
    if reg_images == 0:
        return train_dir, None
    reg_dir = root / "reg"
    reg_folder = make_subset_folder(reg_dir, 1, "", class_word)
    reg_rng = np.random.default_rng([seed, 1])
    for i in range(reg_images):
        image, color, shape, background = draw_reg_shape(reg_rng, size)
        _write_pair(
            reg_folder, f"{i:0{width}d}", image, f"{class_word}, {color} {shape}, {background} background"
        )
    return train_dir, reg_dir
