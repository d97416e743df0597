"""The toy scorer's own validation: how it judges the generator's ground truth, wrong prompts and noise.

`validate()` returns `<set>/<variant>/<score>/{mean,min,max,frac_ge_0.9}` and `images_per_second`; the
tests hold these to the bounds of issue 3 (concepts >= 0.95 on their own pictures, <= 0.10 elsewhere).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
from PIL import Image

from data.toy import imaging, world
from data.toy.score import Expected, _analyse, _concept, _fidelity, _rgb, parse_prompt, score_images
from data.toy.world import CHARACTER, PALETTE, SHAPES, STYLE


def _differ(scene: world.Scene, attributes: tuple[str, ...], rng: np.random.Generator) -> world.Scene:
    """`scene` with each of `attributes` changed to another valid value (colour never equal to background)."""
    for attribute in attributes:
        if attribute == "shape":
            options = [s for s in SHAPES if s != scene.shape]
        else:
            options = [c for c in PALETTE if c not in (scene.color, scene.background)]
        scene = replace(scene, **{attribute: str(rng.choice(options))})
    return scene


def _stats(values: dict[str, list[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, series in sorted(values.items()):
        array = np.array(series, dtype=float)
        out |= {f"{key}/mean": float(array.mean()), f"{key}/min": float(array.min())}
        out |= {f"{key}/max": float(array.max()), f"{key}/frac_ge_0.9": float((array >= 0.9).mean())}
    return out


def _judge(picture: Image.Image, expected: Expected | None = None) -> dict[str, float]:
    rgb = _rgb(picture)
    analysis = _analyse(rgb)
    scores = {name: _concept(rgb, analysis, name) for name in (CHARACTER.name, STYLE.name)}
    if expected is not None:
        scores["fidelity"] = _fidelity(analysis, expected) or 0.0
    return scores


def validate(n: int = 200, seed: int = 0) -> dict[str, float]:
    """The scorer's own checks: `<set>/<variant>/<score>/{mean,min,max,frac_ge_0.9}` and `images_per_second`."""
    # Sets: the generator's character, style and base pictures (clean, 2x2-blurred, noisy, blurred with a
    # colour cast), base pictures against prompts with one or two wrong attributes, plain and blurred noise.
    values: dict[str, list[float]] = defaultdict(list)
    batch: tuple[list[Image.Image], list[str]] = ([], [])
    for index, concept in enumerate((CHARACTER.name, STYLE.name, None)):
        rng = np.random.default_rng([seed, index])
        for i in range(n):
            scene = world.sample_scene(rng, concept)
            image, prompt = world.render(scene), world.caption(scene, sentence=bool(i % 2))
            batch[0].append(image)
            batch[1].append(prompt)
            expected = parse_prompt(prompt) if concept is None else None
            blurred = imaging.box_blur2(image)
            variants = {"clean": image, "blur": blurred, "noise": imaging.add_noise(image, rng)}
            variants["shift"] = imaging.shift_colors(blurred, rng)
            for variant, picture in variants.items():
                for key, value in _judge(picture, expected).items():
                    values[f"{concept or 'base'}/{variant}/{key}"].append(value)
            if concept is None:
                analysis = _analyse(_rgb(image))
                for changed in (("color",), ("shape",), ("background",), ("color", "shape")):
                    wrong = parse_prompt(world.caption(_differ(scene, changed, rng)))
                    values[f"base/mismatch{len(changed)}/fidelity"].append(_fidelity(analysis, wrong) or 0.0)
    rng = np.random.default_rng([seed, 3])
    for blur in (False, True):
        for _ in range(n):
            expected = parse_prompt(world.caption(world.sample_scene(rng)))
            for key, value in _judge(imaging.noise_image(rng, blur), expected).items():
                values[f"{'blurred_noise' if blur else 'noise'}/{key}"].append(value)
    start = time.perf_counter()
    score_images(*batch)
    result = _stats(values)
    result["images_per_second"] = len(batch[0]) / (time.perf_counter() - start)
    return result
