"""The analytic toy scorer: its validation bounds on 200 pictures per set, prompts, partial concepts, speed."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data.toy.imaging import box_blur2, largest_component
from data.toy.score import (
    analyse,
    base_fidelity,
    concept_score,
    parse_prompt,
    score_images,
)
from data.toy.score_validation import validate
from data.toy.world import MAGENTA, PALETTE, RING, caption, draw_shape, render, sample_scene

N = 200


@pytest.fixture(scope="module")
def report() -> dict[str, float]:
    return validate(n=N, seed=0)


@pytest.mark.parametrize("concept", ["character", "style"])
@pytest.mark.parametrize("variant", ["clean", "blur", "noise", "shift"])
def test_concept_pictures_score_high(report: dict[str, float], concept: str, variant: str) -> None:
    key = f"{concept}/{variant}/{concept}"
    assert report[f"{key}/mean"] >= 0.95, report[f"{key}/mean"]
    assert report[f"{key}/frac_ge_0.9"] >= 0.95, report[f"{key}/frac_ge_0.9"]


@pytest.mark.parametrize(
    "key",
    [
        "base/clean/character",
        "base/clean/style",
        "base/blur/character",
        "base/blur/style",
        "character/clean/style",  # the other concept's pictures
        "character/blur/style",
        "style/clean/character",
        "style/blur/character",
        "noise/character",
        "noise/style",
        "blurred_noise/character",
        "blurred_noise/style",
    ],
)
def test_pictures_without_the_concept_score_low(report: dict[str, float], key: str) -> None:
    assert report[f"{key}/mean"] <= 0.10, report[f"{key}/mean"]


@pytest.mark.parametrize("variant", ["clean", "blur", "noise", "shift"])
def test_base_fidelity_of_ground_truth(report: dict[str, float], variant: str) -> None:
    assert report[f"base/{variant}/fidelity/mean"] >= 0.95


def test_base_fidelity_drops_with_wrong_prompts_and_on_noise(report: dict[str, float]) -> None:
    assert report["base/mismatch1/fidelity/max"] <= 0.7  # one of colour, shape, background differs
    assert report["base/mismatch2/fidelity/max"] <= 0.4
    assert report["noise/fidelity/mean"] <= 0.4 and report["blurred_noise/fidelity/mean"] <= 0.4


def test_validate_is_deterministic() -> None:
    first, second = validate(n=5, seed=3), validate(n=5, seed=3)
    first.pop("images_per_second"), second.pop("images_per_second")
    assert first == second


def test_parse_prompt_reads_tags_sentences_and_a1111_syntax() -> None:
    tags = parse_prompt("small, blue background, (red circle:1.2)")
    assert (tags.color, tags.shape, tags.background, tags.size) == ("red", "circle", "blue", "small")
    sentence = parse_prompt(
        "<lora:toy_style:0.8> a LARGE [green] triangle on a white background, masterpiece"
    )
    assert (sentence.color, sentence.shape, sentence.background, sentence.size) == (
        "green",
        "triangle",
        "white",
        "large",
    )
    assert not sentence.character and not sentence.style and sentence.concepts == []
    both = parse_prompt("((chk style)), sls star, black background")
    assert both.concepts == ["character", "style"] and both.color is None and both.shape == "star"
    assert parse_prompt("a photo") == parse_prompt("")


def _picture(
    shape: str, color: tuple, background: tuple, ring: tuple | None = None, arc: int = 360
) -> Image.Image:
    canvas = Image.new("RGB", (256, 256), background)
    draw = ImageDraw.Draw(canvas)
    if ring:
        draw.arc((50, 50, 206, 206), 0, arc, fill=ring, width=10)
    draw_shape(draw, shape, 128, 128, 64, 0.1, color)
    return canvas.resize((64, 64), Image.Resampling.LANCZOS)


def test_partial_concepts_score_in_between() -> None:
    blue = PALETTE["blue"]
    full = concept_score(_picture("star", MAGENTA, blue, RING), "character")
    no_ring = concept_score(_picture("star", MAGENTA, blue), "character")
    half_ring = concept_score(_picture("star", MAGENTA, blue, RING, arc=180), "character")
    purple = concept_score(_picture("star", (140, 40, 200), blue, RING), "character")
    assert full >= 0.95 and 0.3 <= no_ring <= 0.7 and no_ring < half_ring < full and 0.3 <= purple <= 0.8
    assert concept_score(_picture("star", PALETTE["red"], blue, RING), "character") == 0.0
    scene = sample_scene(np.random.default_rng(1), "style")
    styled, plain = render(scene), render(replace(scene, concept=None))
    faded = [concept_score(Image.blend(plain, styled, t), "style") for t in np.linspace(0, 1, 11)]
    # No vignette up to half the depth, a partial score at two thirds, all of it at full depth.
    assert max(faded[:6]) <= 0.05 and 0.0 < faded[6] < 0.95 <= faded[10]
    assert all(a <= b for a, b in zip(faded, faded[1:], strict=False))


def test_analyse_names_the_vignetted_background_and_its_object() -> None:
    rng = np.random.default_rng(8)
    right = 0
    for _ in range(100):
        scene = sample_scene(rng, "style")
        found, plain = analyse(box_blur2(render(scene))), analyse(render(replace(scene, concept=None)))
        truth = (scene.background, scene.color, scene.shape, scene.size)
        right += (found.background, found.color, found.shape, found.size) == truth and found.vignette >= 0.5
        right -= plain.vignette > 0  # a plain background is never taken for a vignette
    assert right >= 95


def test_analyse_reads_any_input_format() -> None:
    scene = sample_scene(np.random.default_rng(4))
    picture = render(scene, size=128)
    for image in (picture, np.asarray(picture), np.asarray(picture) / 255.0, picture.convert("RGBA")):
        found = analyse(image)
        assert (found.color, found.shape, found.background, found.size) == (
            scene.color,
            scene.shape,
            scene.background,
            scene.size,
        )
    assert base_fidelity(picture, "a photo") == 1.0  # nothing stated, nothing to miss
    with pytest.raises(ValueError, match="unknown concept"):
        concept_score(picture, "portrait")


def test_score_images_splits_trigger_and_base_prompts() -> None:
    rng = np.random.default_rng(5)
    character, style, base = (sample_scene(rng, c) for c in ("character", "style", None))
    images = [render(character), render(style), render(base), render(base)]
    prompts = ["sls star, blue background", "chk style, red circle", "a small red circle", "masterpiece"]
    scores = score_images(images, prompts)
    assert scores["concept_score/character"] >= 0.95 and scores["concept_score/style"] >= 0.95
    assert scores["concept_score"] == pytest.approx(
        (scores["concept_score/character"] + scores["concept_score/style"]) / 2
    )
    assert scores["base_fidelity"] == base_fidelity(images[2], prompts[2])  # the bare prompt is not judged
    empty = score_images([images[2]], ["red circle"])
    assert empty["concept_score"] is None and empty["concept_score/style"] is None
    with pytest.raises(ValueError, match="one prompt each"):
        score_images(images, prompts[:2])


def _reference_largest(mask: np.ndarray) -> int:
    """Size of the largest 4-connected component by breadth-first search."""
    seen, best = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], queue, size = True, deque([start]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        best = max(best, size)
    return best


def test_largest_component_matches_a_reference() -> None:
    rng = np.random.default_rng(6)
    spiral = np.zeros((64, 64), bool)
    for t in np.linspace(0, 12 * math.pi, 4000):
        spiral[int(32 + t * 0.8 * math.sin(t)) % 64, int(32 + t * 0.8 * math.cos(t)) % 64] = True
    for mask in [rng.random((64, 64)) < p for p in (0.3, 0.5, 0.6, 0.7)] + [spiral, np.zeros((64, 64), bool)]:
        blob = largest_component(mask)
        assert blob.sum() == _reference_largest(mask) and not (blob & ~mask).any()
        assert _reference_largest(blob) == blob.sum()  # one component


def test_a_vignette_is_the_wrong_background_unless_the_prompt_asks_for_the_style() -> None:
    rng = np.random.default_rng(9)
    leaked, styled = [], []
    for _ in range(40):
        scene = sample_scene(rng, "style")
        plain_prompt = caption(replace(scene, concept=None))
        leaked.append(base_fidelity(render(scene), plain_prompt))  # the style where nobody asked for it
        styled.append(base_fidelity(render(scene), caption(scene)))
    # background (1 of 3.25 weight) is wrong on every leaked picture; colour, shape, size still count
    assert np.mean(leaked) <= 1 - 1 / 3.25 + 0.02 and np.mean(styled) >= 0.95
