"""ControlNet control maps: the extension's resize modes, pixel-perfect resolution, weight-free preprocessors
and their slider defaults, unit checks, and its infotext entry (sd-webui-controlnet's controlnet.py,
external_code.py, args.py and model_free_preprocessors.py, re-derived)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from inference.controlnet_hints import control_tensor, fit_control_map, pixel_perfect_resolution
from inference.controlnet_preprocessors import find_preprocessor
from inference.controlnet_units import ControlNetUnit


def _gradient(height: int, width: int) -> np.ndarray:
    """An RGB map with far more than 200 colours (so the extension resizes it smoothly)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], 2).astype(
        np.uint8
    )


def test_crop_and_resize_covers_the_picture_and_keeps_the_middle():
    image = _gradient(64, 128)  # scale max(64/64, 64/128) = 1: no resize, 32 columns cut on each side
    assert np.array_equal(fit_control_map(image, 64, 64, "Crop and Resize"), image[:, 32:96])


def test_resize_and_fill_fits_inside_on_the_median_border_colour():
    image = _gradient(32, 64)  # scale min(64/32, 64/64) = 1: placed 16 rows down
    out = fit_control_map(image, 64, 64, "Resize and Fill")
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert np.array_equal(out[16:48], image)
    assert (out[:16] == np.median(border, axis=0).astype(np.uint8)).all()
    assert (out[48:] == np.median(border, axis=0).astype(np.uint8)).all()


def test_just_resize_stretches_smooth_maps_cubic_and_segmentation_maps_nearest():
    image = _gradient(32, 64)
    assert np.array_equal(
        fit_control_map(image, 64, 64, "Just Resize"),
        cv2.resize(image, (64, 64), interpolation=cv2.INTER_CUBIC),
    )
    segments = np.zeros((32, 32, 3), np.uint8)
    segments[:, 10:20] = (200, 10, 10)
    segments[:, 20:] = (10, 200, 10)
    out = fit_control_map(segments, 48, 48, "Just Resize")
    assert {tuple(c) for c in out.reshape(-1, 3)} == {(0, 0, 0), (200, 10, 10), (10, 200, 10)}


def test_one_pixel_edges_stay_binary_and_thin_when_upscaled():
    edges = np.zeros((32, 32), np.uint8)
    edges[16, 4:28] = 255
    edges[4:28, 8] = 255
    out = fit_control_map(np.stack([edges] * 3, 2), 64, 64, "Just Resize")
    assert set(np.unique(out)) == {0, 255}
    assert (out[:, 24:50, 0] > 0).sum(axis=0).tolist() == [1] * 26  # thinned back to one pixel


def test_pixel_perfect_resolution_is_the_extensions():
    image = np.zeros((100, 200, 3), np.uint8)
    # estimation = max(k0, k1) * min(H, W) (min for Resize and Fill), rounded: k0 = 64/100, k1 = 64/200
    assert pixel_perfect_resolution(image, 64, 64, "Crop and Resize") == 64
    assert pixel_perfect_resolution(image, 64, 64, "Resize and Fill") == 32
    assert pixel_perfect_resolution(image, 96, 48, "Just Resize") == round(max(96 / 100, 48 / 200) * 100)


def test_weight_free_preprocessors():
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    assert np.array_equal(find_preprocessor("invert").function(image, 0.5, 0.5, 0.5), 255 - image)
    edges = find_preprocessor("canny").function(image, 64, 100, 200)
    assert np.array_equal(edges[:, :, 0], cv2.Canny(image, 100, 200))  # 64 px: no resize, no padding
    assert edges[14:18, 20:40].max(axis=0).min() == 255 and edges[24:40, 24:40].max() == 0
    ramp = np.repeat(np.arange(64, dtype=np.uint8)[None, :, None] * 4, 64, 0).repeat(3, 2)
    binary = find_preprocessor("threshold").function(ramp, 64, 127, 0.5)
    assert np.array_equal(binary[0, :, 0] == 255, ramp[0, :, 0] > 127)
    scribble = find_preprocessor("scribble_xdog").function(image, 64, 32, 0.5)
    assert (
        set(np.unique(scribble)) == {0, 255}
        and scribble[12:20, 30].max() == 255
        and scribble[32, 32].max() == 0
    )


def test_preprocessors_that_need_weights_say_to_pass_a_map():
    for name in (
        "depth_midas",
        "openpose_full",
        "hed",
        "mlsd",
        "normal_bae",
        "seg_ofade20k",
        "lineart_realistic",
    ):
        with pytest.raises(ValueError, match="needs annotator model weights.*module=none"):
            find_preprocessor(name)
    with pytest.raises(ValueError, match="unknown preprocessor 'cany'"):
        find_preprocessor("cany")


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "edges.png"
    image = np.zeros((64, 96, 3), np.uint8)
    image[10:50, 20:70] = 255
    Image.fromarray(image).save(path)
    return path


def test_slider_defaults_fill_in_as_the_extension_resets_them(picture):
    image = np.zeros((64, 64, 3), np.uint8)
    # bound_check_params: values out of the slider's range (-1) become its default; hidden sliders are 0..1, 0.5
    assert ControlNetUnit("m", str(picture), "canny").settings(image, 64, 64) == (512, 100, 200)
    assert ControlNetUnit("m", str(picture), "none").settings(image, 64, 64) == (512, 0.5, 0.5)
    assert ControlNetUnit("m", str(picture), "invert").settings(image, 64, 64) == (0.5, 0.5, 0.5)
    given = ControlNetUnit("m", str(picture), "canny", processor_res=256, threshold_a=50, threshold_b=300)
    assert given.settings(image, 64, 64) == (256, 50.0, 200)
    assert ControlNetUnit("m", str(picture), "canny", pixel_perfect=True).settings(image, 48, 32) == (
        48,
        100,
        200,
    )


def test_infotext_entry_is_the_extensions(picture):
    unit = ControlNetUnit("m", str(picture), "canny")
    assert unit.infotext("control_canny [0123abcd]", 64, 64) == (
        "Module: canny, Model: control_canny [0123abcd], Weight: 1.0, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )
    other = ControlNetUnit(
        "m", str(picture), weight=0.5, guidance_start=0.2, guidance_end=0.8,
        control_mode="ControlNet is more important", resize_mode="Envelope (Outer Fit)",
    )  # fmt: skip
    assert other.infotext("x", 64, 64) == (
        "Module: none, Model: x, Weight: 0.5, Resize Mode: Resize and Fill, Processor Res: 512, Threshold A: 0.5, "
        "Threshold B: 0.5, Guidance Start: 0.2, Guidance End: 0.8, Pixel Perfect: False, "
        "Control Mode: ControlNet is more important"
    )


def test_control_map_preprocesses_then_fits_and_can_swap_to_bgr(picture):
    unit = ControlNetUnit("m", str(picture), "invert", resize_mode="Crop and Resize")
    source = np.asarray(Image.open(picture))
    assert np.array_equal(unit.control_map(64, 64), (255 - source)[:, 16:80])
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(picture)
    swapped = ControlNetUnit("m", str(picture), rgb_to_bgr=True).control_map(64, 64)
    assert swapped[0, 0].tolist() == [0, 0, 200]
    assert (
        control_tensor(swapped).shape == (1, 3, 64, 64)
        and control_tensor(swapped)[0, 2, 0, 0] == torch.tensor(200.0) / 255
    )


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"image": "missing.png"}, "image missing.png is not a file"),
        ({"module": "depth_zoe"}, "needs annotator model weights"),
        ({"guidance_start": 0.8, "guidance_end": 0.3}, "guidance_start 0.8 is after guidance_end 0.3"),
        ({"weight": 2.5}, "weight must be within 0 and 2"),
        ({"control_mode": "Guess"}, "unknown control_mode"),
        ({"resize_mode": "Stretch"}, "unknown resize_mode"),
        ({"guidance_end": 1.5}, "guidance_end is a fraction"),
    ],
)
def test_bad_units_are_refused_in_one_line(picture, tmp_path, changes, message):
    values = {"model": str(tmp_path), "image": str(picture), **changes}
    with pytest.raises(ValueError, match=message) as error:
        ControlNetUnit(**values).check()
    assert "\n" not in str(error.value)
