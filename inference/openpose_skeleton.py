"""An OpenPose JSON (the openpose editor's, and what A1111's ControlNet extension saves) drawn as the
extension draws a pose: coloured limbs and joints on black, hands in rainbow lines, face as white dots."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

Point = tuple[float, float] | None

# OpenPose's 18-point body (COCO order, 1-based as OpenPose lists its limbs): neck to shoulders, arms, hips,
# legs, then nose, eyes and ears.
LIMBS = [
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
    (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
]  # fmt: skip
BODY_COLOURS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]  # fmt: skip
HAND_EDGES = [(0, i + 1) if i % 4 == 0 else (i, i + 1) for i in range(20)]  # five fingers from the wrist
LIMB_HALF_WIDTH = 4  # pixels: limbs are ellipses 2 * 4 px thick
EDGE = 0.01  # hand and face points at x or y ≤ this are "not detected" (drawn nowhere)


def _points(numbers: list[float] | None) -> list[Point] | None:
    """Flat [x, y, confidence, ...] → points; confidence below 1 means missing, as the extension reads it."""
    if not numbers:
        return None
    if len(numbers) % 3:
        raise ValueError(f"keypoint lists hold x, y, confidence triples, got {len(numbers)} numbers")
    return [
        (x, y) if c >= 1.0 else None
        for x, y, c in zip(numbers[::3], numbers[1::3], numbers[2::3], strict=True)
    ]


def _scale(points: list[Point], canvas: np.ndarray) -> tuple[float, float]:
    """(width, height) factors: points all within [0, 1] are fractions of the canvas, others pixels."""
    given = [p for p in points if p is not None]
    normalized = bool(given) and all(abs(x) <= 1 and abs(y) <= 1 for x, y in given)
    return (canvas.shape[1], canvas.shape[0]) if normalized else (1.0, 1.0)


def draw_body(canvas: np.ndarray, points: list[Point]) -> None:
    """Limbs as filled ellipses at 60 % of their colour, then joints as 4 px discs at full colour."""
    w, h = _scale(points, canvas)
    for (a, b), colour in zip(LIMBS, BODY_COLOURS, strict=False):
        if a > len(points) or b > len(points) or points[a - 1] is None or points[b - 1] is None:
            continue
        (x1, y1), (x2, y2) = points[a - 1], points[b - 1]
        x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        length = ((y1 - y2) ** 2 + (x1 - x2) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
        centre = (int((x1 + x2) / 2), int((y1 + y2) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in colour])
    for point, colour in zip(points, BODY_COLOURS, strict=False):
        if point is not None:
            cv2.circle(canvas, (int(point[0] * w), int(point[1] * h)), 4, colour, thickness=-1)


def draw_hand(canvas: np.ndarray, points: list[Point] | None) -> None:
    """21 hand points: 2 px lines in hues around the colour wheel, then 4 px blue joints."""
    if not points:
        return
    w, h = _scale(points, canvas)
    pixels = [None if p is None else (int(p[0] * w), int(p[1] * h)) for p in points]
    for index, (a, b) in enumerate(HAND_EDGES):
        if pixels[a] is None or pixels[b] is None or min(*pixels[a], *pixels[b]) <= EDGE:
            continue
        colour = [c * 255 for c in colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0)]
        cv2.line(canvas, pixels[a], pixels[b], colour, thickness=2)
    for pixel in pixels:
        if pixel is not None and min(pixel) > EDGE:
            cv2.circle(canvas, pixel, 4, (0, 0, 255), thickness=-1)


def draw_face(canvas: np.ndarray, points: list[Point] | None) -> None:
    """Face points as 3 px white discs."""
    if not points:
        return
    w, h = _scale(points, canvas)
    for point in points:
        if point is not None and min(int(point[0] * w), int(point[1] * h)) > EDGE:
            cv2.circle(canvas, (int(point[0] * w), int(point[1] * h)), 3, (255, 255, 255), thickness=-1)


def draw_pose_json(pose: dict[str, Any]) -> np.ndarray:
    """An OpenPose JSON dict (canvas_width, canvas_height, people[...]) → (H, W, 3) uint8 RGB skeleton."""
    canvas = np.zeros((int(pose["canvas_height"]), int(pose["canvas_width"]), 3), np.uint8)
    for person in pose.get("people", []):
        body = _points(person.get("pose_keypoints_2d"))
        if body:
            draw_body(canvas, body)
        draw_hand(canvas, _points(person.get("hand_left_keypoints_2d")))
        draw_hand(canvas, _points(person.get("hand_right_keypoints_2d")))
        draw_face(canvas, _points(person.get("face_keypoints_2d")))
    return canvas


def read_pose_json(path: str | Path) -> np.ndarray:
    """A pose file → its skeleton image; ValueError naming the file when it is not an OpenPose JSON.

    The editor writes one pose object; a list (one per frame, as the extension saves batches) uses its first.
    """
    try:
        pose = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(pose, list):
            pose = pose[0]
        return draw_pose_json(pose)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ValueError(
            f"{path} is not an OpenPose JSON with canvas_width, canvas_height and people ({error})"
        ) from None
