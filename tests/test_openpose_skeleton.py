"""OpenPose JSON → skeleton, drawn as the ControlNet extension draws poses (annotator/openpose/util.py):
limbs at 60 % of their colour under 4 px joints in full colour, on black."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.controlnet_units import ControlNetUnit
from inference.openpose_skeleton import draw_pose_json, read_pose_json


def _pose(points: dict[int, tuple[float, float]], size: int = 64) -> dict:
    """A one-person pose: `points` maps a 0-based body keypoint (0 nose, 1 neck, 2 right shoulder...) to x, y."""
    flat = []
    for index in range(18):
        x, y = points.get(index, (0.0, 0.0))
        flat += [x, y, 1.0 if index in points else 0.0]
    return {"canvas_width": size, "canvas_height": size, "people": [{"pose_keypoints_2d": flat}]}


def test_limb_and_joint_colours_at_known_points():
    # Neck (1) at (32, 20) and right shoulder (2) at (20, 20): the first limb [2, 3] in OpenPose's 1-based
    # numbering, coloured (255, 0, 0) * 0.6; joints get their own colours: index 1 (255, 85, 0), 2 (255, 170, 0).
    canvas = draw_pose_json(_pose({1: (32, 20), 2: (20, 20)}))
    assert canvas[20, 26].tolist() == [153, 0, 0]  # mid-limb, 6 px from both joints
    assert canvas[20, 32].tolist() == [255, 85, 0]
    assert canvas[20, 20].tolist() == [255, 170, 0]
    assert canvas[40, 40].tolist() == [0, 0, 0]
    assert canvas[26, 26].tolist() == [0, 0, 0]  # the limb is an ellipse 2 * 4 px thick


def test_neck_to_hip_limb_colour_and_missing_points():
    # Limb [2, 9] (neck → right hip, 7th in the sequence) is drawn in colour 6, (0, 255, 0) * 0.6.
    canvas = draw_pose_json(_pose({1: (32, 10), 8: (32, 50)}))
    assert canvas[30, 32].tolist() == [0, 153, 0]
    # A point with confidence below 1 is missing: no limb to it.
    pose = _pose({1: (32, 10), 8: (32, 50)})
    pose["people"][0]["pose_keypoints_2d"][8 * 3 + 2] = 0.5
    assert draw_pose_json(pose)[30, 32].tolist() == [0, 0, 0]


def test_fractions_of_the_canvas_draw_the_same_as_pixels():
    pixels = draw_pose_json(_pose({1: (32, 20), 2: (20, 20)}))
    fractions = draw_pose_json(_pose({1: (0.5, 20 / 64), 2: (20 / 64, 20 / 64)}))
    assert np.array_equal(pixels, fractions)


def test_a_json_image_is_drawn_for_a_unit_and_bad_json_is_one_line(tmp_path):
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(_pose({1: (32, 20), 2: (20, 20)}, size=128)))
    unit = ControlNetUnit("m", str(path))
    assert unit.module == "openpose_json"
    assert np.array_equal(unit.control_map(128, 128), read_pose_json(path))
    assert unit.control_map(64, 64).shape == (64, 64, 3)
    path.write_text('{"people": []}')
    with pytest.raises(ValueError, match="pose.json is not an OpenPose JSON"):
        read_pose_json(path)
