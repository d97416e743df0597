"""An analytic scorer for the toy world: it reads prompts, and judges generated pictures by their pixels alone.

Generated pictures are blurry and their colours approximate, so every judgement here is robust: colours are
named by their nearest reference in CIELAB, masks come from distances to the measured background, shapes
from the geometry of the largest connected blob, and concept scores ramp smoothly from 0 to 1.

- `base_fidelity(image, prompt)`: the weighted fraction of the attributes that the prompt states and the
  picture shows (a vignetted background counts as the stated background only when the prompt asks for
  the style). Weights: background 1, object colour 1, shape 1, size 0.25 (size is the weakest cue, and a
  scene with one wrong main attribute must stay below 0.7).
- `concept_score(image, "character")`: a coherent magenta blob with yellow ring pixels all around it.
- `concept_score(image, "style")`: a vignette: the border is explained by one colour darkened towards the
  corners much better than by one plain colour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from data.toy import imaging, world
from data.toy.imaging import classify_shape, largest_component, morph, shape_features, to_lab
from data.toy.world import CHARACTER, MAGENTA, PALETTE, RING, SHAPES, STYLE

SIDE = 64  # pictures are judged at 64 x 64: every pixel threshold below is in these units
COLORS: dict[str, tuple[int, int, int]] = {**PALETTE, "magenta": MAGENTA}
WEIGHTS = {"background": 1.0, "color": 1.0, "shape": 1.0, "size": 0.25}
SHAPE_AREA = {"circle": np.pi, "square": 1.7**2, "triangle": 1.299, "star": 1.3225}  # area / half-extent^2
SIZE_SPLIT = 17.2  # half-extent in pixels between small (12.8) and large (23.0), their geometric mean


def _rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    return imaging.as_rgb(image, SIDE)


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


_BG_NAMES = list(PALETTE)
_BG_LAB = to_lab(np.array([PALETTE[c] for c in _BG_NAMES], dtype=np.uint8))
_COLOR_NAMES = list(COLORS)
_COLOR_LAB = to_lab(np.array(list(COLORS.values()), dtype=np.uint8))
BG_MATCH = 30.0  # Lab distance within which the border's colour gets a palette name
COLOR_MATCH = 45.0  # Lab distance within which an object's median colour gets a name
BORDER_FIT = 30.0  # RGB distance within which a border pixel counts as explained by a background model
# Vignette depths tried on the border (0 = a plain background): a generated vignette is rarely exact.
# The style's own is 0.85; one of half that depth is a different, fainter look and scores 0.
VIGNETTE_DEPTHS = (0.0, 0.4, 0.55, 0.7, 0.85, 0.95)


def _border_band(width: int = 3) -> np.ndarray:
    band = np.ones((SIDE, SIDE), bool)
    band[width:-width, width:-width] = False
    return band


_BORDER = _border_band()
# How far each pixel is into the vignette's fall-off: 0 in the middle, 1 at the corners.
_FALLOFF = (1.0 - world.vignette_factor(SIDE)) / world.VIGNETTE_DEPTH


@dataclass(frozen=True)
class Analysis:
    """What a picture shows: background (None if unclear), object colour, shape and size, and the evidence."""

    background: str | None
    vignette: float  # how clearly the border is a background colour darkened towards the corners, 0..1
    color: str | None
    shape: str | None
    size: str | None
    background_rgb: np.ndarray = field(repr=False, compare=False)  # (k, 3): its colour, or darkest and plain
    mask: np.ndarray = field(repr=False, compare=False)  # the largest blob far from the background
    features: dict[str, float] = field(default_factory=dict, compare=False)


def _fit_border(border: np.ndarray, falloff: np.ndarray, depth: float) -> tuple[np.ndarray, float, float]:
    """Background colour B that best explains border pixels as B * (1 - depth * falloff); fit; error.

    The colour is a median, so an object touching the border does not move it; the fit is the fraction of
    border pixels within `BORDER_FIT` of the model, the error their median distance from it.
    """
    shade = (1.0 - depth * falloff)[:, None]
    colour = np.median(border / shade, axis=0)
    distance = np.linalg.norm(border - colour * shade, axis=1)
    return colour, float((distance < BORDER_FIT).mean()), float(np.median(distance))


def _background(rgb: np.ndarray) -> tuple[str | None, float, np.ndarray, np.ndarray]:
    """Palette name of the background, how clearly it is vignetted, its colour range (k, 3) and its
    expected colour at every pixel (H, W, 3)."""
    border, falloff = rgb[_BORDER].astype(float), _FALLOFF[_BORDER]
    fits = [_fit_border(border, falloff, depth) for depth in VIGNETTE_DEPTHS]
    best = 1 + int(np.argmin([error for _, _, error in fits[1:]]))
    (plain, plain_fit, _), (colour, fit, _) = fits[0], fits[best]
    vignette = (
        _ramp(fit, 0.5, 0.75) * _ramp(fit - plain_fit, 0.15, 0.35) * _ramp(VIGNETTE_DEPTHS[best], 0.4, 0.7)
    )
    if vignette < 0.5:
        colour, fit, depth = plain, plain_fit, 0.0
    else:
        depth = VIGNETTE_DEPTHS[best]
    lab = to_lab(np.clip(np.rint(colour), 0, 255).astype(np.uint8))
    distance = np.linalg.norm(_BG_LAB - lab, axis=1)
    name = _BG_NAMES[int(distance.argmin())] if distance.min() < BG_MATCH and fit >= 0.6 else None
    colours = np.stack([colour * (1.0 - depth), colour]) if depth else colour[None]
    return name, vignette, colours, colour * (1.0 - depth * _FALLOFF)[..., None]


def _object_mask(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """The largest blob of pixels at least half-way from the background (`backdrop`) to the object colour."""
    pixels = rgb.astype(float)
    dist = np.linalg.norm(pixels - backdrop, axis=-1)
    candidates = dist > 40.0
    if not candidates.any():
        return candidates
    strong = dist >= 0.8 * np.percentile(dist[candidates], 90)
    core = np.median(pixels[strong], axis=0)
    # Half-way between background and object keeps a blurred blob at its true area.
    threshold = 0.5 * float(np.linalg.norm(core - np.median(backdrop[strong], axis=0)))
    return largest_component(dist >= max(threshold, 20.0))


def _object_color(rgb: np.ndarray, mask: np.ndarray) -> str | None:
    """The colour name of the object's inner pixels; None when they disagree (noise) or match nothing."""
    inner = morph(mask)
    inner = inner if inner.sum() >= 8 else mask
    lab = to_lab(rgb[inner])
    median = np.median(lab, axis=0)
    if np.median(np.linalg.norm(lab - median, axis=1)) > 20.0:
        return None
    dist = np.linalg.norm(_COLOR_LAB - median, axis=1)
    return _COLOR_NAMES[int(dist.argmin())] if dist.min() < COLOR_MATCH else None


def analyse(image: Image.Image | np.ndarray) -> Analysis:
    """Background colour, object mask, object colour, shape and size of a picture."""
    return _analyse(_rgb(image))


def _analyse(rgb: np.ndarray) -> Analysis:
    background, vignette, background_rgb, backdrop = _background(rgb)
    mask = _object_mask(rgb, backdrop)
    area = int(mask.sum())
    total = int(mask.size)
    if area < 12 or area > 0.5 * total:  # nothing, or no single object: noise, or a picture of one colour
        return Analysis(background, vignette, None, None, None, background_rgb, mask)
    features = shape_features(mask)
    shape = classify_shape(features)
    half = float(np.sqrt(area / SHAPE_AREA[shape]))
    size = "small" if half < SIZE_SPLIT else "large"
    color = _object_color(rgb, mask)
    return Analysis(background, vignette, color, shape, size, background_rgb, mask, features)


_PALETTE_RGB = np.array(list(PALETTE.values()), float)
_GRID_Y, _GRID_X = np.mgrid[:SIDE, :SIDE]


def _magenta_blob(pixels: np.ndarray, background_rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest blob of pixels nearer magenta than any palette or background colour, and all such pixels."""
    to_magenta = np.square(pixels - np.array(MAGENTA, np.float32)).sum(-1)
    magenta = to_magenta < 100.0**2
    if magenta.any():
        others = np.concatenate([background_rgb, _PALETTE_RGB]).astype(np.float32)
        nearest_other = np.square(pixels[magenta][:, None] - others).sum(-1).min(-1)
        magenta[magenta] = to_magenta[magenta] < nearest_other
    return largest_component(magenta), int(magenta.sum())


def _ring_coverage(pixels: np.ndarray, background_rgb: np.ndarray, blob: np.ndarray) -> float:
    """Fraction of 16 angular sectors around the blob with yellow (or yellow blurred into background) pixels."""
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean(), xs.mean()
    radius = float(np.hypot(ys - cy, xs - cx).max()) + 0.5
    r = np.hypot(_GRID_Y - cy, _GRID_X - cx)
    annulus = (r > 0.9 * radius) & (r < 1.7 * radius)
    near = pixels[annulus]
    yellow = np.zeros(len(near), bool)
    for background in background_rgb:
        # A thin blurred ring is a mix of yellow and background: find pixels on that mixing line.
        toward = np.array(RING, np.float32) - background
        alpha = (near - background) @ toward / max(float(toward @ toward), 1.0)
        off_line = np.linalg.norm(near - background - alpha[:, None] * toward, axis=-1)
        yellow |= (alpha >= 0.3) & (off_line < 0.12 * np.linalg.norm(toward) + 25.0)
    angle = np.arctan2(_GRID_Y[annulus][yellow] - cy, _GRID_X[annulus][yellow] - cx)
    return np.unique(((angle + np.pi) / (2 * np.pi) * 16).astype(int) % 16).size / 16


def _character_score(rgb: np.ndarray, background_rgb: np.ndarray) -> float:
    """A coherent magenta blob (largest component of the magenta pixels), ringed by yellow pixels."""
    pixels = rgb.astype(np.float32)
    blob, total = _magenta_blob(pixels, background_rgb)
    area = int(blob.sum())
    if area == 0:
        return 0.0
    # Scattered magenta pixels (noise) make no blob; a star of the small size has about 200 pixels.
    body = _ramp(area, 25, 90) * _ramp(area / total, 0.5, 0.85)
    inner = morph(blob) if morph(blob).sum() >= 8 else blob
    drift = float(np.linalg.norm(np.median(to_lab(rgb[inner]), axis=0) - _COLOR_LAB[-1]))
    body *= _ramp(45.0 - drift, 0.0, 25.0)  # a purple or pink star is only half the character
    return body * (0.5 + 0.5 * _ramp(_ring_coverage(pixels, background_rgb, blob), 0.4, 0.8))


def concept_score(image: Image.Image | np.ndarray, concept: str) -> float:
    """How clearly a picture shows `concept` ("character" or "style"), in [0, 1]."""
    return _concept(_rgb(image), None, concept)


def _concept(rgb: np.ndarray, analysis: Analysis | None, concept: str) -> float:
    if concept == CHARACTER.name:
        return _character_score(rgb, (analysis or _analyse(rgb)).background_rgb)
    if concept == STYLE.name:
        return (analysis or _analyse(rgb)).vignette
    raise ValueError(f"unknown concept `{concept}`: use `{CHARACTER.name}` or `{STYLE.name}`")


@dataclass(frozen=True)
class Expected:
    """What a prompt asks for: base attributes (None when not stated) and which trigger words it holds."""

    color: str | None = None
    shape: str | None = None
    background: str | None = None
    size: str | None = None
    character: bool = False
    style: bool = False

    @property
    def concepts(self) -> list[str]:
        """The concepts whose trigger word the prompt holds."""
        return [c.name for c, on in ((CHARACTER, self.character), (STYLE, self.style)) if on]


_EXTRA_NETWORK = re.compile(r"<[^<>]*>")  # <lora:name:0.8>, <hypernet:...>
_ATTENTION_WEIGHT = re.compile(r":\s*[-+]?\d*\.?\d+")  # (word:1.2) -> (word
_SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large"}
_BACKGROUND_WORDS = {"background", "backdrop", "bg"}


def parse_prompt(prompt: str) -> Expected:
    """The attributes a tag or sentence prompt states, in any order; A1111 weights and <lora:…> are ignored."""
    text = _ATTENTION_WEIGHT.sub(" ", _EXTRA_NETWORK.sub(" ", prompt.lower()))
    words = re.findall(r"[a-z]+", text)
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        singular = word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word
        if word in COLORS:
            found.setdefault("background" if following in _BACKGROUND_WORDS else "color", word)
        elif singular in SHAPES:
            found.setdefault("shape", singular)
        elif word in _SIZE_WORDS:
            found.setdefault("size", _SIZE_WORDS[word])
    return Expected(**found, character=CHARACTER.trigger in words, style=STYLE.trigger in words)


def _fidelity(analysis: Analysis, expected: Expected) -> float | None:
    weights = {k: w for k, w in WEIGHTS.items() if getattr(expected, k) is not None}
    if not weights:
        return None
    hits = sum(w for k, w in weights.items() if _shows(analysis, expected, k))
    return hits / sum(weights.values())


def _shows(analysis: Analysis, expected: Expected, attribute: str) -> bool:
    if attribute == "background" and (analysis.vignette >= 0.5) != expected.style:
        # A vignette where the prompt asks for a plain colour (a style leaking into every prompt) is the
        # wrong background, and a plain one is wrong where the prompt asks for the style.
        return False
    return getattr(analysis, attribute) == getattr(expected, attribute)


def base_fidelity(image: Image.Image | np.ndarray, prompt: str | Expected) -> float:
    """Weighted fraction of the prompt's background / colour / shape / size that the picture shows (1 if none)."""
    expected = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    value = _fidelity(analyse(image), expected)
    return 1.0 if value is None else value


def score_images(images: list, prompts: list[str]) -> dict[str, float | None]:
    """Mean concept score of trigger prompts (overall and per concept) and mean fidelity of the others."""
    if len(images) != len(prompts):
        raise ValueError(
            f"score_images: {len(images)} images but {len(prompts)} prompts; give one prompt each"
        )
    concept: dict[str, list[float]] = {CHARACTER.name: [], STYLE.name: []}
    fidelity: list[float] = []
    for image, prompt in zip(images, prompts, strict=True):
        expected = parse_prompt(prompt)
        rgb = _rgb(image)
        analysis = _analyse(rgb)
        for name in expected.concepts:
            concept[name].append(_concept(rgb, analysis, name))
        value = None if expected.concepts else _fidelity(analysis, expected)
        if value is not None:  # a prompt that states no attribute cannot be judged
            fidelity.append(value)
    every = concept[CHARACTER.name] + concept[STYLE.name]
    result = {"concept_score": _mean(every), "base_fidelity": _mean(fidelity)}
    result.update({f"concept_score/{name}": _mean(values) for name, values in concept.items()})
    return result


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
