"""ControlNet preprocessors that need no weights, as A1111's ControlNet extension computes them, with its slider
ranges and defaults (what a unit's processor_res / threshold_a / threshold_b become when left at -1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from inference.controlnet_hints import hwc3


@dataclass(frozen=True)
class Slider:
    """A preprocessor setting's range and default; values outside the range fall back to the default."""

    minimum: float = 0.0
    maximum: float = 1.0
    default: float = 0.5

    def resolve(self, value: float) -> float:
        """The value the extension runs with: the default for -1 (or anything out of range)."""
        return self.default if value < self.minimum or value > self.maximum else value


RESOLUTION = Slider(64, 2048, 512)
HIDDEN = Slider()  # the extension's unused slider: 0..1, 0.5


def _pad64(size: int) -> int:
    return int(np.ceil(size / 64.0) * 64 - size)


def _at_resolution(
    image: np.ndarray, resolution: float
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Scale the short side to `resolution` (area down, cubic up), pad edges to a multiple of 64; and the
    function that crops a result back to the scaled size."""
    image = hwc3(image)
    raw_h, raw_w = image.shape[:2]
    k = float(resolution) / min(raw_h, raw_w)
    height, width = int(np.round(raw_h * k)), int(np.round(raw_w * k))
    scaled = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    padded = np.pad(scaled, [[0, _pad64(height)], [0, _pad64(width)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), lambda result: np.ascontiguousarray(result[:height, :width])


def none(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """The image as given (already a control map)."""
    return image


def invert(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """White background and black lines → black background and white lines."""
    return 255 - hwc3(image)


def canny(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """OpenCV's Canny edges with low / high thresholds a / b, at the preprocessor resolution."""
    padded, crop = _at_resolution(image, resolution)
    return crop(cv2.cvtColor(cv2.Canny(padded, int(a), int(b)), cv2.COLOR_GRAY2RGB))


def threshold(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """White where every channel is above a, else black."""
    padded, crop = _at_resolution(image, resolution)
    result = np.zeros_like(padded)
    result[np.min(padded, axis=2) > a] = 255
    return crop(result)


def scribble_xdog(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """Binary scribble lines from a difference of Gaussians (σ 0.5 and 5), white where 2·DoG exceeds a."""
    padded, crop = _at_resolution(image, resolution)
    fine = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 0.5)
    coarse = cv2.GaussianBlur(padded.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(padded)
    result[2 * (255 - dog) > a] = 255
    return crop(result)


def blur_gaussian(image: np.ndarray, resolution: float, a: float, b: float) -> np.ndarray:
    """A Gaussian blur of σ a at the preprocessor resolution (for tile models)."""
    padded, crop = _at_resolution(image, resolution)
    return cv2.GaussianBlur(crop(padded), (0, 0), float(a))


@dataclass(frozen=True)
class Preprocessor:
    """A preprocessor and its three sliders as the extension defines them."""

    function: Callable[[np.ndarray, float, float, float], np.ndarray]
    resolution: Slider = RESOLUTION
    a: Slider = HIDDEN
    b: Slider = HIDDEN


PREPROCESSORS = {
    "none": Preprocessor(none),
    "invert": Preprocessor(invert, resolution=HIDDEN),
    "canny": Preprocessor(canny, a=Slider(1, 255, 100), b=Slider(1, 255, 200)),
    "threshold": Preprocessor(threshold, a=Slider(0, 255, 127)),
    "scribble_xdog": Preprocessor(scribble_xdog, a=Slider(1, 64, 32)),
    "blur_gaussian": Preprocessor(blur_gaussian, a=Slider(0.01, 64.0, 9.0)),
    # Not the extension's: the unit's image is an OpenPose JSON, drawn as its skeleton (no model).
    "openpose_json": Preprocessor(none),
}
ALIASES = {"invert (from white bg & black line)": "invert"}
# The extension's preprocessors that run annotator networks (depth, edges, lines, normals, poses, segmentation):
# their weights are not available here, so a unit names them only to be told to pass a preprocessed map.
NEEDS_WEIGHTS = (
    "depth", "hed", "softedge", "pidinet", "scribble_hed", "scribble_pidinet", "mlsd", "normal", "openpose",
    "dw_openpose", "animal_openpose", "densepose", "seg", "oneformer", "uniformer", "lineart", "mediapipe",
    "shuffle", "clip", "ip-adapter", "instant_id", "inpaint", "reference", "recolor", "tile_colorfix", "teed",
    "anime_face_segment", "revision", "t2ia",
)  # fmt: skip


def find_preprocessor(name: str) -> Preprocessor:
    """The preprocessor `name` names; ValueError (one line) for those needing weights and unknown names."""
    name = ALIASES.get(name, name)
    if name in PREPROCESSORS:
        return PREPROCESSORS[name]
    if name.startswith(NEEDS_WEIGHTS):
        raise ValueError(
            f"preprocessor {name!r} needs annotator model weights, which this engine does not run: preprocess "
            "the image elsewhere (e.g. in A1111) and pass the control map with module=none"
        )
    raise ValueError(f"unknown preprocessor {name!r}; use one of {', '.join(PREPROCESSORS)}")
