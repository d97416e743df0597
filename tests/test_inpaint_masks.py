"""Inpainting's pixel side, checked against hand-derived cases: the mask's box, its growth to the render's
aspect ratio, the blur, the alpha mask, the fill, the resize modes, the uncrop and overlay, the config."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from data.typed_config import ConfigError
from inference.cli import load_render_config
from inference.inpaint_config import InpaintConfig
from inference.inpaint_prep import prepare_masked_init
from inference.masking import binary_mask, blur_kernel_size, blur_mask, crop_region, expand_crop_region, fill
from inference.overlay import apply_overlay, crop_and_resize, overlay_image, resize_and_fill


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """White over `box` (x1, y1, x2, y2 exclusive), black elsewhere."""
    mask = Image.new("L", size, 0)
    if box[2] > box[0] and box[3] > box[1]:
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


@pytest.mark.parametrize(
    ("box", "padding", "expected"),
    [
        ((10, 20, 30, 25), 0, (10, 20, 30, 25)),  # exactly the white pixels, right and bottom exclusive
        ((10, 20, 30, 25), 4, (6, 16, 34, 29)),  # grown on every side
        ((2, 60, 30, 64), 8, (0, 52, 38, 64)),  # clipped at the image's edges
        ((0, 0, 0, 0), 32, None),  # nothing masked: no region (A1111 then renders the whole picture)
    ],
)
def test_crop_region_is_the_padded_box_inside_the_image(box, padding, expected):
    assert crop_region(box_mask((64, 64), box), padding) == expected


@pytest.mark.parametrize(
    ("region", "render", "image", "expected"),
    [
        # 20x10 box for a square render: height grows by 10, 5 above and 5 below.
        ((10, 20, 30, 30), (64, 64), (100, 100), (10, 15, 30, 35)),
        # At the top edge: y1 would be -5, so the box slides down by 5.
        ((0, 0, 20, 10), (64, 64), (100, 100), (0, 0, 20, 20)),
        # At the bottom edge: y2 would be 105, so the box slides up by 5.
        ((10, 90, 30, 100), (64, 64), (100, 100), (10, 80, 30, 100)),
        # Odd growth (11): 5 before, 6 after, then slid down by 5 from -5.
        ((0, 0, 21, 10), (64, 64), (100, 100), (0, 0, 21, 21)),
        # A 2:1 render widens a square box: 10 more columns, 5 each side.
        ((10, 10, 20, 20), (128, 64), (100, 100), (5, 10, 25, 20)),
        # Growth truncated to whole pixels: 10 * 64/48 - 10 = 3.33 → 3 columns, 1 before and 2 after.
        ((10, 10, 20, 20), (64, 48), (100, 100), (9, 10, 22, 20)),
        # The image is too small for the ratio: clipped to the image after sliding.
        ((0, 0, 30, 10), (64, 64), (30, 12), (0, 0, 30, 12)),
    ],
)
def test_expand_crop_region_matches_hand_derived_boxes(region, render, image, expected):
    assert expand_crop_region(region, *render, *image) == expected


def test_blur_kernel_is_a1111s_size_and_the_blur_is_opencvs_gaussian():
    for sigma, taps in ((4, 21), (1, 7), (2.2, 13)):  # 2 * int(2.5 sigma + 0.5) + 1
        assert blur_kernel_size(sigma) == taps
    # A1111's blur, by hand: a float Gaussian of 21 taps with OpenCV's mirrored border, rounded per pass,
    # is within a level of OpenCV's fixed-point result.
    mask = box_mask((64, 64), (16, 16, 48, 48))
    distance = np.arange(-10, 11, dtype=np.float64)
    kernel = np.exp(-(distance**2) / (2 * 4.0**2))
    kernel /= kernel.sum()
    values = np.asarray(mask, dtype=np.float64)
    for axis in (1, 0):
        padded = np.pad(values, [(10, 10) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        values = np.floor(
            np.apply_along_axis(lambda row: np.convolve(row, kernel, "valid"), axis, padded) + 0.5
        )
    assert np.abs(np.asarray(blur_mask(mask, 4, 4), dtype=int) - values.astype(int)).max() <= 1


def test_blur_spreads_the_mask_by_its_kernel_radius_only():
    mask = box_mask((64, 64), (16, 16, 48, 48))
    blurred = np.asarray(blur_mask(mask, 4, 4))
    assert np.array_equal(np.asarray(blur_mask(mask, 0, 0)), np.asarray(mask))
    assert blurred[32, 32] == 255 and blurred[32, 16] in range(128, 150)  # the box's edge: a bit over half
    # Sigma 4 gives a kernel of radius 10: 10 pixels out from the box (6 and 57) is grey, 11 is black.
    assert blurred[32, 5] == 0 and blurred[32, 58] == 0 and blurred[32, 6] > 0 and blurred[32, 57] > 0
    assert np.array_equal(blurred, blurred[:, ::-1])  # symmetric; x and y each round once, so a level apart:
    assert np.abs(blurred.astype(int) - blurred.T).max() <= 1
    only_x = np.asarray(blur_mask(mask, 4, 0))
    assert only_x[12, 32] == 0 and only_x[32, 12] > 0  # x only: rows outside the box stay black


def test_an_alpha_mask_reads_its_opaque_strokes_and_others_their_brightness():
    strokes = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    strokes.putpixel((1, 1), (0, 0, 0, 255))  # a black but opaque stroke counts
    strokes.putpixel((2, 2), (255, 255, 255, 100))  # under half opacity does not
    values = np.asarray(binary_mask(strokes))
    assert values[1, 1] == 255 and values[2, 2] == 0 and values.sum() == 255
    grey = Image.new("RGB", (8, 8), (200, 200, 200))
    assert np.asarray(binary_mask(grey)).max() == 200  # RGB: its luminance, kept soft
    opaque = Image.new("RGBA", (8, 8), (255, 255, 255, 255))
    assert np.asarray(binary_mask(opaque)).min() == 255  # an opaque RGBA mask is read by brightness


def test_fill_paints_the_masked_area_with_the_colours_around_it():
    image = Image.new("RGB", (64, 64), (20, 40, 220))
    ImageDraw.Draw(image).rectangle((24, 24, 39, 39), fill=(250, 10, 10))  # red under the mask
    filled = np.asarray(fill(image, box_mask((64, 64), (24, 24, 40, 40)))).astype(int)
    assert np.abs(filled[32, 32] - (20, 40, 220)).max() <= 2  # the red is gone, blue came in
    assert np.abs(filled[5, 5] - (20, 40, 220)).max() <= 1  # outside: unchanged


def test_resize_modes_fit_or_cover_as_a1111():
    tall = Image.new("RGB", (20, 40), (255, 0, 0))
    ImageDraw.Draw(tall).rectangle((0, 0, 19, 0), fill=(0, 255, 0))  # green top row
    filled = np.asarray(resize_and_fill(tall, 40, 40))
    # Fit: 20x40 in the middle; the side gaps stretched from the edge columns (red), no black left.
    assert (
        filled.shape == (40, 40, 3) and filled[20, 2].tolist() == [255, 0, 0] and filled.max(axis=2).min() > 0
    )
    covered = crop_and_resize(tall, 40, 40)  # cover: 40x80, the middle 40 rows kept, the green row cut
    assert np.asarray(covered)[:, :, 1].max() < 10


def test_uncrop_puts_the_render_at_its_box_and_the_overlay_keeps_the_rest():
    original = Image.new("RGB", (100, 80), (10, 20, 30))
    keep = box_mask((100, 80), (10, 20, 42, 52))  # repainted box: 32x32 at (10, 20)
    out = np.asarray(
        apply_overlay(
            Image.new("RGB", (64, 64), (0, 255, 0)), overlay_image(original, keep), (10, 20, 32, 32)
        )
    )
    assert out.shape == (80, 100, 3)
    assert (out[20:52, 10:42] == (0, 255, 0)).all()  # the render, shrunk to 32x32, in its box
    assert (out[:20] == (10, 20, 30)).all() and (out[:, 42:] == (10, 20, 30)).all()  # original elsewhere


def test_whole_picture_overlay_shows_the_render_from_half_the_blurred_mask():
    init = Image.new("RGB", (64, 64), (10, 20, 30))
    prepared = prepare_masked_init(init, box_mask((64, 64), (16, 16, 48, 48)), InpaintConfig(), 64, 64)
    alpha = np.asarray(prepared.overlay)[..., 3].astype(int)
    mask = np.asarray(prepared.mask).astype(int)
    assert np.array_equal(alpha, 255 - np.clip(mask * 2, 0, 255))
    assert prepared.fields == {"Mask blur": 4} and prepared.paste is None


def test_only_masked_renders_the_expanded_box_and_records_it():
    init = Image.new("RGB", (128, 96), (10, 20, 30))
    config = InpaintConfig(mask_blur=0, inpaint_full_res="Only masked", inpaint_full_res_padding=4)
    prepared = prepare_masked_init(init, box_mask((128, 96), (40, 30, 60, 40)), config, 64, 64)
    # Box (40, 30, 60, 40) padded by 4: (36, 26, 64, 44), 28x18 → square 28x28: (36, 21, 64, 49).
    assert prepared.paste == (36, 21, 28, 28)
    assert prepared.image.size == (64, 64) and prepared.overlay.size == (128, 96)
    assert prepared.fields == {"Inpaint area": "Only masked", "Masked area padding": 4}
    mask = np.asarray(prepared.mask)  # the mask's box, scaled by 64/28, in the render
    assert mask[32, 32] == 255 and mask[2, 32] == 0


def test_settings_take_a1111_names_or_indices_and_bad_ones_are_one_line(tmp_path):
    config = InpaintConfig(
        inpainting_fill="2", inpainting_mask_invert="inpaint not masked", inpaint_full_res="1"
    )
    assert (config.fill_mode, config.invert, config.only_masked) == (2, True, True)
    truncated = tmp_path / "mask.png"
    box_mask((64, 64), (0, 0, 8, 8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    cases = [
        (InpaintConfig(mask="nowhere.png"), "inpaint.mask=nowhere.png is not a file"),
        (InpaintConfig(mask=str(truncated)), "cannot be read as an image"),
        (InpaintConfig(inpainting_fill="blur"), "inpaint.inpainting_fill=blur is not one of"),
        (InpaintConfig(inpaint_full_res="4"), "inpaint.inpaint_full_res=4 is not one of"),
        (InpaintConfig(inpainting_mask_weight=1.5), "inpainting_mask_weight must be between 0 and 1"),
        (InpaintConfig(inpainting_mask_weight=float("nan")), "inpainting_mask_weight must be a finite"),
        (InpaintConfig(mask_blur=-1), "mask_blur must be between 0 and 64"),
        (InpaintConfig(inpaint_full_res_padding=300), "inpaint_full_res_padding must be between 0 and 256"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            config.validate("init.png")
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="needs init_image"):
        InpaintConfig(mask=str(truncated)).validate(None)


def test_the_render_config_checks_the_inpaint_group_once(tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    base = {"prompt": "a", "init_image": str(init), "out": str(tmp_path / "out")}
    config = load_render_config(OmegaConf.create({**base, "inpaint": {"inpainting_fill": 2, "mask_blur": 0}}))
    assert config.inpaint.fill_mode == 2 and config.inpaint.mask is None  # A1111's index, typed as text
    with pytest.raises(ConfigError, match=r"^inpaint\.mask=gone\.png is not a file"):
        load_render_config(OmegaConf.create({**base, "inpaint": {"mask": "gone.png"}}))
    with pytest.raises(ConfigError, match=r"inpaint\.nothing"):
        load_render_config(OmegaConf.create({**base, "inpaint": {"nothing": 1}}))
