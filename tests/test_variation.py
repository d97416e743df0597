"""Variation seeds (A1111's "Variation seed" / "Variation seed strength") on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.infotext import format_infotext, params_from_infotext, parse_infotext
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams, generate_batch
from inference.variation import slerp


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_slerp_keeps_the_noise_scale_that_a_plain_mix_loses():
    low, high = (torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    half = slerp(0.5, low, high)
    # Independent unit noises are nearly orthogonal: a plain average has std ~0.71, the slerp ~1.
    assert abs(float(half.std()) - 1.0) < 0.15
    assert float(((low + high) / 2).std()) < 0.8
    torch.testing.assert_close(slerp(0.0, low, high), low)
    torch.testing.assert_close(slerp(1.0, low, high), high)


def test_slerp_of_nearly_parallel_noise_mixes_with_the_weights_swapped_as_a1111():
    low = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(1))
    high = low * 1.001
    torch.testing.assert_close(slerp(0.3, low, high), low * 0.3 + high * 0.7)


def test_full_strength_starts_from_the_variation_seeds_noise(model):
    # Euler draws no noise after the start, so the starting noise alone decides the picture.
    base = GenerationParams("a red circle", seed=1, steps=3, width=64, height=64, sampler="Euler")
    as_seed_2 = dataclasses.replace(base, seed=2)
    full = dataclasses.replace(base, subseed=2, subseed_strength=1.0)
    half = dataclasses.replace(base, subseed=2, subseed_strength=0.5)
    off = dataclasses.replace(base, subseed=2, subseed_strength=0.0)
    images = [_pixels(image) for image in generate_batch(model, [base, as_seed_2, full, half, off])]
    seed_1, seed_2, blended_full, blended_half, unblended = images
    assert np.abs(blended_full - seed_2).max() <= 2  # float rounding of the blend only
    assert np.abs(seed_1 - seed_2).mean() > 5
    assert np.abs(blended_half - seed_1).mean() > 1 and np.abs(blended_half - seed_2).mean() > 1
    # Rows of one batch may round a level apart on some CPUs; rendered alone, the same operations run in the
    # same order, and strength 0 is the plain seed bit for bit.
    assert np.abs(unblended - seed_1).max() <= 1
    (alone_off,), (alone_plain,) = (generate_batch(model, [params]) for params in (off, base))
    assert np.array_equal(_pixels(alone_off), _pixels(alone_plain))


def test_infotext_records_variation_only_with_a_strength():
    params = GenerationParams("a red circle", seed=1, subseed=7, subseed_strength=0.25)
    text = format_infotext(params)
    assert "Variation seed: 7, Variation seed strength: 0.25" in text
    back = params_from_infotext(parse_infotext(text))
    assert (back.subseed, back.subseed_strength) == (7, 0.25)
    assert "Variation" not in format_infotext(dataclasses.replace(params, subseed_strength=0.0))
