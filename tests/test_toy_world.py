"""The toy world generator: determinism, held-out concepts absent from the base world, captions that parse back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from data.toy.imaging import largest_component
from data.toy.score import parse_prompt
from data.toy.world import (
    CHARACTER,
    MAGENTA,
    PALETTE,
    SHAPES,
    STYLE,
    base_prompt_scenes,
    caption,
    random_broad_image,
    render,
    sample_scene,
    vignette_factor,
)


def _pictures(seed: int, concept: str | None, count: int = 20) -> list[tuple[bytes, str, str]]:
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, concept) for _ in range(count)]
    return [(render(s).tobytes(), caption(s), caption(s, sentence=True)) for s in scenes]


@pytest.mark.parametrize("concept", [None, "character", "style"])
def test_same_seed_same_pixels_and_captions(concept: str | None) -> None:
    assert _pictures(7, concept) == _pictures(7, concept)
    assert _pictures(7, concept) != _pictures(8, concept)
    broad = [random_broad_image(np.random.default_rng(3)).tobytes() for _ in range(2)]
    assert broad[0] == broad[1] != random_broad_image(np.random.default_rng(4)).tobytes()


def _off_mix_line(pixels: np.ndarray, a: tuple[int, int, int], b: tuple[int, int, int]) -> np.ndarray:
    """Distance of each pixel from the line through colours a and b (anti-aliasing only mixes the two)."""
    a_, ab = np.array(a, float), np.array(b, float) - np.array(a, float)
    t = (pixels - a_) @ ab / (ab @ ab)
    return np.linalg.norm(pixels - a_ - t[..., None] * ab, axis=-1)


def test_base_pictures_hold_one_plain_object_on_a_plain_background() -> None:
    """No magenta, no ring, no vignette: two colours and their mixes, one blob, a one-colour border."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng)
        assert scene.concept is None and scene.color in PALETTE and scene.background in PALETTE
        assert scene.color != scene.background and scene.shape in SHAPES
        pixels = np.asarray(render(scene), dtype=float)
        assert np.abs(pixels - MAGENTA).sum(-1).min() > 150
        background = np.array(PALETTE[scene.background], float)
        # Lanczos overshoot clipped at 0 or 255 leaves the line by a few levels; a third colour leaves it by far more.
        assert _off_mix_line(pixels, PALETTE[scene.background], PALETTE[scene.color]).max() < 25.0
        away = np.abs(pixels - background).sum(-1) > 30
        assert largest_component(away).sum() == away.sum()  # a ring would be a second blob
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert (np.abs(border - background).sum(-1) < 10).mean() > 0.85  # a vignette darkens it all


def test_concept_pictures_show_their_concept() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        scene = sample_scene(rng, "character")
        assert (scene.shape, scene.color) == ("star", "magenta") and scene.background != "yellow"
        pixels = np.asarray(render(scene), dtype=float)
        assert (np.abs(pixels - MAGENTA).sum(-1) < 30).sum() > 100
        scene = sample_scene(rng, "style")
        assert scene.background != "black"  # where a vignette would not show
        pixels = np.asarray(render(scene), dtype=float)
        plain = np.asarray(render(replace(scene, concept=None)), dtype=float)
        factor = vignette_factor(64)
        assert np.abs(pixels - plain * factor[..., None]).max() <= 0.5  # the plain scene, darkened
        assert factor.max() == 1.0 and abs(factor.min() - 0.15) < 0.01  # 15 % left in the corners


def test_tag_and_sentence_captions() -> None:
    scene = replace(sample_scene(np.random.default_rng(0)), color="red", shape="circle", background="blue")
    scene = replace(scene, size="small")
    assert caption(scene) == "red circle, blue background, small"
    assert caption(scene, sentence=True) == "a small red circle on a blue background"
    style = replace(scene, concept="style")
    assert caption(style) == f"{STYLE.trigger} {STYLE.class_word}, red circle, blue background, small"
    assert (
        caption(style, sentence=True)
        == f"{STYLE.trigger} {STYLE.class_word}, a small red circle on a blue background"
    )
    character = replace(scene, concept="character", shape="star", color="magenta")
    assert caption(character).startswith(f"{CHARACTER.trigger} {CHARACTER.class_word}, blue background")


@pytest.mark.parametrize("concept", [None, "character", "style"])
@pytest.mark.parametrize("sentence", [False, True])
def test_captions_parse_back_to_the_scene(concept: str | None, sentence: bool) -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        scene = sample_scene(rng, concept)
        expected = parse_prompt(caption(scene, sentence))
        assert (expected.shape, expected.background, expected.size) == (
            scene.shape,
            scene.background,
            scene.size,
        )
        assert expected.color == (None if concept == "character" else scene.color)
        assert (expected.character, expected.style) == (concept == "character", concept == "style")


def test_base_prompt_scenes_are_varied_and_centred() -> None:
    scenes = base_prompt_scenes(32, seed=1234)
    assert scenes == base_prompt_scenes(32, seed=1234)
    assert len({(s.color, s.shape, s.background) for s in scenes}) == 32
    assert all((s.x, s.y, s.angle, s.concept) == (0.5, 0.5, 0.0, None) for s in scenes)
    assert {s.shape for s in scenes} == set(SHAPES)
