"""Crop geometry: centre and detail-seeking windows of the target aspect ratio, and the final cut."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data.crop import center_crop_box, crop_and_resize, focus_crop_box, window_size

SIZES = [(1, 1), (2, 1), (1, 2), (3, 2), (7, 7), (20000, 20), (20, 20000), (1, 5000), (5000, 1), (1920, 1080)]
TARGETS = [(512, 512), (512, 768), (768, 512), (1, 1000), (1000, 1), (1024, 256), (640, 384)]


def _flat_with_detail(size: tuple[int, int], region: tuple[int, int, int, int], seed: int = 0) -> Image.Image:
    """A flat grey picture with random noise inside `region` (l, t, r, b)."""
    width, height = size
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    left, top, right, bottom = region
    noise = np.random.default_rng(seed).integers(0, 256, (bottom - top, right - left, 3), dtype=np.uint8)
    pixels[top:bottom, left:right] = noise
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("size", "target", "box"),
    [
        ((1920, 1080), (512, 512), (420, 0, 1500, 1080)),
        ((1080, 1920), (512, 512), (0, 420, 1080, 1500)),
        ((1000, 500), (768, 512), (125, 0, 875, 500)),
        ((1000, 1000), (512, 768), (166, 0, 833, 1000)),
        ((1000, 1000), (768, 512), (0, 166, 1000, 833)),
        ((640, 384), (640, 384), (0, 0, 640, 384)),
        ((1, 1), (512, 512), (0, 0, 1, 1)),
        ((20000, 20), (512, 512), (9990, 0, 10010, 20)),
        ((20, 20000), (512, 768), (0, 9985, 20, 10015)),
        ((20000, 20), (1, 1000), (9999, 0, 10000, 20)),
    ],
)
def test_center_crop_box(size: tuple, target: tuple, box: tuple) -> None:
    assert center_crop_box(size, target) == box


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("target", TARGETS)
def test_boxes_are_inside_maximal_and_of_the_target_ratio(size: tuple, target: tuple) -> None:
    width, height = size
    image = Image.new("RGB", size, (200, 30, 30)) if width * height <= 400_000 else None
    boxes = [center_crop_box(size, target)]
    if image is not None:
        boxes.append(focus_crop_box(image, target))
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        box_w, box_h = right - left, bottom - top
        assert (box_w, box_h) == window_size(size, target)
        # As large as the image allows: it spans the image on at least one axis.
        assert box_w == width or box_h == height
        # Target ratio within one pixel (a 1 px minimum side only where the image is thinner than that).
        tw, th = target
        if box_h == height:
            assert abs(box_w - height * tw / th) <= 1 or box_w in (1, width)
        else:
            assert abs(box_h - width * th / tw) <= 1 or box_h in (1, height)


def test_focus_picks_the_detailed_region_horizontally() -> None:
    image = _flat_with_detail((800, 200), (560, 0, 760, 200))
    left, top, right, bottom = focus_crop_box(image, (512, 512))
    assert (top, bottom, right - left) == (0, 200, 200)
    assert abs(left - 560) <= 4
    assert center_crop_box(image.size, (512, 512)) == (300, 0, 500, 200)


def test_focus_picks_the_detailed_region_vertically() -> None:
    image = _flat_with_detail((300, 1200), (0, 90, 300, 390))
    left, top, right, bottom = focus_crop_box(image, (512, 512))
    assert (left, right, bottom - top) == (0, 300, 300)
    assert abs(top - 90) <= 6


def test_focus_prefers_the_most_central_window_holding_a_small_subject() -> None:
    # A 100 px subject fits in many 400 px windows; the one nearest the centre wins, clamped at the edge.
    image = _flat_with_detail((1600, 400), (100, 150, 200, 250))
    left, _, right, _ = focus_crop_box(image, (512, 512))
    assert left <= 100 and right >= 200
    assert abs(left - 100) <= 8
    image = _flat_with_detail((1600, 400), (1000, 150, 1100, 250))
    left, _, right, _ = focus_crop_box(image, (512, 512))
    assert left <= 1000 and right >= 1100
    assert abs(left - 700) <= 8


def test_focus_on_a_flat_or_fitting_image_is_the_centre() -> None:
    for size in [(1000, 300), (1003, 300), (300, 1001), (5000, 4999)]:
        flat = Image.new("RGB", size, (10, 200, 90))
        assert focus_crop_box(flat, (512, 512)) == center_crop_box(size, (512, 512))
    fitting = _flat_with_detail((768, 512), (0, 0, 100, 100))
    assert focus_crop_box(fitting, (768, 512)) == (0, 0, 768, 512)


def test_focus_handles_odd_modes_and_edges() -> None:
    image = _flat_with_detail((900, 300), (0, 0, 250, 300)).convert("P")
    assert focus_crop_box(image, (512, 512)) == (0, 0, 300, 300)
    rgba = _flat_with_detail((900, 300), (650, 0, 900, 300)).convert("RGBA")
    assert focus_crop_box(rgba, (512, 512)) == (600, 0, 900, 300)


def test_crop_and_resize_gives_the_target_size() -> None:
    image = _flat_with_detail((1920, 1080), (0, 0, 1920, 1080))
    box = center_crop_box(image.size, (512, 768))
    out = crop_and_resize(image, box, (512, 768))
    assert out.size == (512, 768) and out.mode == "RGB"


def test_crop_and_resize_is_a_plain_cut_at_the_same_size() -> None:
    image = _flat_with_detail((300, 200), (0, 0, 300, 200))
    out = crop_and_resize(image, (50, 20, 250, 120), (200, 100))
    assert np.array_equal(np.asarray(out), np.asarray(image)[20:120, 50:250])


def test_crop_and_resize_keeps_colours_of_a_uniform_region() -> None:
    pixels = np.zeros((400, 800, 3), dtype=np.uint8)
    pixels[:, :400] = (255, 0, 0)
    pixels[:, 400:] = (0, 0, 255)
    out = np.asarray(crop_and_resize(Image.fromarray(pixels), (500, 50, 800, 350), (64, 64)))
    assert out.shape == (64, 64, 3)
    assert (out == (0, 0, 255)).all()


def test_crop_and_resize_converts_palette_images() -> None:
    image = Image.new("P", (100, 100), 3)
    assert crop_and_resize(image, (0, 0, 100, 100), (50, 50)).mode == "RGB"


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (-1, 0, 10, 10), (0, 0, 101, 10), (5, 5, 4, 10)])
def test_crop_and_resize_rejects_boxes_outside_the_image(box: tuple) -> None:
    with pytest.raises(ValueError, match="not a non-empty box inside the 100×100 image"):
        crop_and_resize(Image.new("RGB", (100, 100)), box, (10, 10))


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (1.5, 2)])
def test_bad_sizes_are_rejected(size: tuple) -> None:
    with pytest.raises(ValueError, match="positive whole numbers"):
        center_crop_box(size, (512, 512))
    with pytest.raises(ValueError, match="positive whole numbers"):
        center_crop_box((512, 512), size)
