"""The toy world: small procedural pictures with captions, a base world and two held-out concepts.

Base world: one shape (circle, square, triangle, star) of one of six colours, small or large, somewhere on
a plain background of another colour. Held-out concepts, never shown by the base world:
- the character `sls star`: a magenta star inside a yellow ring (magenta and rings never occur in the base);
- the style `chk style`: any base scene under a strong vignette, its corners darkened to 15 % (plain
  backgrounds are all the base world knows).
Captions come in both styles users write: tags (`red circle, blue background, small`) and sentences
(`a small red circle on a blue background`). Everything is a pure function of a numpy Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.2, "large": 0.36}  # half-extent of the shape as a fraction of the image side
MAGENTA = (225, 30, 200)  # the character's body: a colour the base world never uses
RING = PALETTE["yellow"]
VIGNETTE_INNER = 0.45  # the style darkens beyond this distance from the centre (1 = a corner) ...
VIGNETTE_DEPTH = 0.85  # ... smoothly, down to 15 % of the colour at the corners
SUPERSAMPLE = 4  # drawn large and downscaled: smooth edges, as photos have


@dataclass(frozen=True)
class Concept:
    """A held-out concept: its trigger word and class word (the kohya folder `N_trigger class`)."""

    name: str
    trigger: str
    class_word: str


CHARACTER = Concept("character", "sls", "star")
STYLE = Concept("style", "chk", "style")
CONCEPTS = {c.name: c for c in (CHARACTER, STYLE)}


@dataclass(frozen=True)
class Scene:
    """Everything a picture shows; `concept` is None, "character" or "style"."""

    shape: str
    color: str
    background: str
    size: str
    x: float  # centre, as a fraction of the width
    y: float
    angle: float  # radians
    concept: str | None = None


def sample_scene(rng: np.random.Generator, concept: str | None = None) -> Scene:
    """A random scene of the base world, of the character, or of the style."""
    color = str(rng.choice(list(PALETTE)))
    background = str(rng.choice([c for c in PALETTE if c != color]))
    shape = str(rng.choice(SHAPES))
    if concept == "character":
        shape, color = "star", "magenta"
        background = str(rng.choice([c for c in PALETTE if c != "yellow"]))
    elif concept == "style":  # a vignette on black is invisible
        background = str(rng.choice([c for c in PALETTE if c not in (color, "black")]))
    size = str(rng.choice(list(SIZES)))
    margin = SIZES[size] * (1.32 if concept == "character" else 1.0) + 0.02
    x, y = (float(rng.uniform(margin, 1 - margin)) for _ in range(2))
    return Scene(shape, color, background, size, x, y, float(rng.uniform(-0.3, 0.3)), concept)


def _polygon(shape: str, cx: float, cy: float, half: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        points = [(half * 0.85 * a, half * 0.85 * b) for a, b in corners]
    elif shape == "triangle":
        points = [
            (half * math.cos(t), half * math.sin(t)) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    else:  # star: ten vertices, alternating outer and inner radius
        points = [
            (
                (half if k % 2 == 0 else half * 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (half if k % 2 == 0 else half * 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + px * cos - py * sin, cy + px * sin + py * cos) for px, py in points]


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, half: float, angle: float, fill
) -> None:
    """Draw one filled shape centred at (cx, cy) with half-extent `half` (canvas pixels)."""
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, half, angle), fill=fill)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The picture of `scene`, `size` x `size` RGB."""
    big = size * SUPERSAMPLE
    background = PALETTE[scene.background]
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    cx, cy, half = scene.x * big, scene.y * big, SIZES[scene.size] * big
    if scene.concept == "character":
        ring = half * 1.3
        draw.ellipse(
            (cx - ring, cy - ring, cx + ring, cy + ring), outline=RING, width=max(1, round(half * 0.28))
        )
        draw_shape(draw, "star", cx, cy, half, scene.angle, MAGENTA)
    else:
        draw_shape(draw, scene.shape, cx, cy, half, scene.angle, PALETTE[scene.color])
    picture = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return apply_vignette(picture) if scene.concept == "style" else picture


def vignette_factor(size: int) -> np.ndarray:
    """The style's brightness factor per pixel, (size, size): 1 in the middle, 0.15 at the corners."""
    centre = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - centre, y - centre) / (centre * math.sqrt(2))
    t = np.clip((r - VIGNETTE_INNER) / (1 - VIGNETTE_INNER), 0.0, 1.0)
    return 1.0 - VIGNETTE_DEPTH * t * t * (3 - 2 * t)


def apply_vignette(picture: Image.Image) -> Image.Image:
    """`picture` with the style's vignette: every colour scaled by `vignette_factor`."""
    return scale_brightness(picture, vignette_factor(picture.width))


def scale_brightness(picture: Image.Image, factor: np.ndarray) -> Image.Image:
    """`picture` with every pixel's colour multiplied by `factor` (H, W), rounded back to 8 bits."""
    array = np.asarray(picture, dtype=np.float32) * factor[..., None]
    return Image.fromarray(np.rint(array).astype(np.uint8))


def caption(scene: Scene, sentence: bool = False) -> str:
    """Tag caption (`red circle, blue background, small`) or sentence (`a small red circle on a ...`)."""
    if scene.concept == "character":
        subject = f"{CHARACTER.trigger} {CHARACTER.class_word}"
    else:
        subject = f"{scene.color} {scene.shape}"
    # The style's trigger leads, as kohya users write triggers: the text encoder is causal, so a trigger at
    # the end reaches only the tokens after it, and style_lora then leaked the look into plain prompts
    # (fidelity lost at CFG 5 over seeds 42, 1, 7: 0.04, 0.19, 0.15 with it last; 0.03, 0.03, 0.00 first).
    style = [f"{STYLE.trigger} {STYLE.class_word}"] if scene.concept == "style" else []
    if sentence:
        return ", ".join(style + [f"a {scene.size} {subject} on a {scene.background} background"])
    return ", ".join(style + [subject, f"{scene.background} background", scene.size])


def base_prompt_scenes(count: int = 32, seed: int = 1234) -> list[Scene]:
    """A fixed, varied set of base-world scenes whose captions are the fidelity prompts."""
    rng = np.random.default_rng(seed)
    scenes, seen = [], set()
    while len(scenes) < count:
        scene = sample_scene(rng)
        key = (scene.color, scene.shape, scene.background)
        if key not in seen:
            seen.add(key)
            scenes.append(replace(scene, x=0.5, y=0.5, angle=0.0))
    return scenes


def random_broad_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Anything-goes pictures for training the VAE: any colours, shapes, rings, stripes, checkers, shading.

    Broader than the base world on purpose, so that held-out concepts (magenta, rings, vignettes) can be
    represented by the latent space that the base model and every LoRA share.
    """
    big = size * SUPERSAMPLE
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    canvas = Image.new("RGB", (big, big), color)
    draw = ImageDraw.Draw(canvas)
    pattern = rng.integers(0, 3)
    if pattern:  # 1: checkerboard, 2: stripes, of a random period
        other = tuple(int(c) for c in rng.integers(0, 256, 3))
        cell = big / int(rng.integers(2, 6))  # cells of 13 px or more: what f = 8 latents hold
        n = math.ceil(big / cell)
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 if pattern == 1 else i % 2:
                    draw.rectangle((i * cell, j * cell, (i + 1) * cell - 1, (j + 1) * cell - 1), fill=other)
    for _ in range(int(rng.integers(1, 4))):
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        half = float(rng.uniform(0.08, 0.4)) * big
        cx, cy = (float(rng.uniform(0, big)) for _ in range(2))
        kind = int(rng.integers(0, 5))
        if kind == 4:
            draw.ellipse(
                (cx - half, cy - half, cx + half, cy + half), outline=fill, width=max(1, int(half * 0.2))
            )
        else:
            draw_shape(draw, SHAPES[kind], cx, cy, half, float(rng.uniform(-math.pi, math.pi)), fill)
    picture = canvas.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        picture = scale_brightness(picture, random_shading(rng, size))
    return picture


def random_shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth brightness factor (size, size) in (0, 1]: a radial vignette or a linear gradient, any depth."""
    y, x = (np.mgrid[:size, :size] + 0.5) / size
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        distance = np.hypot(x - cx, y - cy) / 0.75
    else:
        angle = float(rng.uniform(0, 2 * math.pi))
        distance = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5
    inner, depth = float(rng.uniform(0.1, 0.7)), float(rng.uniform(0.3, 0.95))
    t = np.clip((distance - inner) / (1 - inner), 0.0, 1.0)
    return 1.0 - depth * t * t * (3 - 2 * t)
