"""The toy world's control task: silhouettes, fixed cases, and the judge of shape class and place."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from data.toy.control import (
    POSITION_TOLERANCE,
    control_cases,
    control_match,
    control_prompt,
    shapeless_caption,
    silhouette,
)
from data.toy.world import SHAPES, Scene, caption, render


def test_cases_are_fixed_and_cycle_through_the_shapes():
    cases = control_cases()
    assert cases == control_cases() and len(cases) == 32
    assert [scene.shape for scene in cases] == list(SHAPES) * 8
    assert len({(round(s.x, 3), round(s.y, 3)) for s in cases}) == 32  # places differ


def test_silhouette_is_the_shape_white_on_black_where_the_scene_puts_it():
    scene = Scene("square", "red", "blue", "large", 0.3, 0.7, 0.0)
    mask = np.asarray(silhouette(scene).convert("L")) > 127
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() + 0.5 - 0.3 * 64) < 0.5 and abs(ys.mean() + 0.5 - 0.7 * 64) < 0.5
    side = 2 * 0.36 * 0.85 * 64  # the square's drawn side
    assert abs(mask.sum() - side**2) / side**2 < 0.05


def test_the_pictures_the_controls_come_from_match_them_all():
    cases = control_cases()
    judgements = [control_match(render(scene), scene) for scene in cases]
    assert all(j.matches for j in judgements)
    assert max(j.distance for j in judgements) < 1.0


def test_another_place_or_another_shape_does_not_match():
    scene = Scene("triangle", "red", "blue", "small", 0.3, 0.3, 0.0)
    moved = replace(scene, x=0.3 + 1.5 * POSITION_TOLERANCE / 64)
    judgement = control_match(render(moved), scene)
    assert judgement.shape == "triangle" and not judgement.matches
    assert not control_match(render(replace(scene, shape="circle")), scene).matches
    blank = np.full((64, 64, 3), 40, np.uint8)
    assert not control_match(blank, scene).matches


def test_prompts_name_the_colours_and_not_the_shape():
    scene = Scene("star", "red", "blue", "small", 0.5, 0.5, 0.0)
    assert control_prompt(scene) == "red, blue background"
    assert shapeless_caption(caption(scene), scene) == "red, blue background, small"
