"""The toy base model's caption variants: the scene's own words only, in varied order and completeness."""

from __future__ import annotations

import re

import numpy as np

from data.toy.caption_variants import caption_variants
from data.toy.score import parse_prompt
from data.toy.world import PALETTE, SHAPES, SIZES, sample_scene


def _variants(seed: int, count: int = 50) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [caption_variants(sample_scene(rng), rng, 6) for _ in range(count)]


def test_variants_are_deterministic_and_varied():
    assert _variants(1) == _variants(1) != _variants(2)
    tags = [text for variants in _variants(3, 200) for text in variants[:3]]
    subjects = {f"{c} {s}" for c in PALETTE for s in SHAPES}
    first_is_subject = sum(t.split(", ")[0] in subjects for t in tags) / len(tags)
    assert 0.4 < first_is_subject < 0.9  # the order varies, so the model cannot read by position
    assert any("background" not in t for t in tags) and any("small" in t or "large" in t for t in tags)


def test_variants_state_only_the_scene_and_nothing_else():
    rng = np.random.default_rng(5)
    world = set(PALETTE) | set(SHAPES) | set(SIZES) | {"a", "on", "background"}
    for _ in range(200):
        scene = sample_scene(rng)
        for text in caption_variants(scene, rng, 6):
            stated = parse_prompt(text)
            assert (stated.color, stated.shape) == (scene.color, scene.shape), text
            assert stated.background in (None, scene.background), text
            assert stated.size in (None, scene.size), text
            assert set(re.findall(r"[a-z]+", text)) <= world, text
