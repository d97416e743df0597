"""The toy world's control task: a shape's silhouette says where the shape goes and which shape it is.

A control image is the scene's shape drawn white on black at the picture's size, like the masks and
scribbles users give a ControlNet. The prompt names only the colours (`red, blue background`), so the shape
and its place can come from the control alone. `control_match` judges a generated picture against the scene
its control was drawn from: the scorer must see the same shape class, with its centre within
`POSITION_TOLERANCE` pixels of the control's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data.toy.score import analyse
from data.toy.world import SHAPES, SIZES, SUPERSAMPLE, Scene, draw_shape, sample_scene

POSITION_TOLERANCE = 6.0  # pixels at 64 x 64: a third of a small shape's half-extent plus blur
CASES_SEED = 4321


def silhouette(scene: Scene, size: int = 64) -> Image.Image:
    """The control image of `scene`: its shape white on black, `size` x `size` RGB, edges smoothed."""
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    cx, cy, half = scene.x * big, scene.y * big, SIZES[scene.size] * big
    draw_shape(draw, scene.shape, cx, cy, half, scene.angle, (255, 255, 255))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def control_prompt(scene: Scene) -> str:
    """The colours of `scene` without its shape: `red, blue background`."""
    return f"{scene.color}, {scene.background} background"


def shapeless_caption(caption: str, scene: Scene) -> str:
    """A tag caption with the shape word taken out (`red circle, …` → `red, …`)."""
    return caption.replace(f"{scene.color} {scene.shape}", scene.color)


def control_cases(count: int = 32, seed: int = CASES_SEED) -> list[Scene]:
    """Fixed scenes for judging a ControlNet: the four shapes in turn, places and colours drawn at random."""
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = sample_scene(rng)
        if scene.shape == SHAPES[len(scenes) % len(SHAPES)]:
            scenes.append(scene)
    return scenes


@dataclass(frozen=True)
class ControlJudgement:
    """What the scorer saw against what the control asked for."""

    shape: str | None
    centre: tuple[float, float] | None  # (x, y) in pixels at 64 x 64, None without an object
    distance: float  # pixels from the control's centre (inf without an object)
    matches: bool


def control_match(image: Image.Image | np.ndarray, scene: Scene) -> ControlJudgement:
    """Whether `image` shows `scene`'s shape class centred where its control put it."""
    analysis = analyse(image)
    if not analysis.mask.any():
        return ControlJudgement(analysis.shape, None, float("inf"), False)
    ys, xs = np.nonzero(analysis.mask)
    side = analysis.mask.shape[0]
    centre = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    # The control's centre is the shape's centroid: a triangle's and a star's sit at their drawn centre too.
    distance = float(np.hypot(centre[0] - scene.x * side, centre[1] - scene.y * side))
    matches = analysis.shape == scene.shape and distance <= POSITION_TOLERANCE
    return ControlJudgement(analysis.shape, centre, distance, matches)
