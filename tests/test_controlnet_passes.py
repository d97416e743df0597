"""ControlNet units beyond txt2img, as A1111's ControlNet extension applies them: img2img and inpainting (the
guidance window over the steps img2img samples, "Only masked" cutting the unit's image to the crop box) and
the hires fix (a map at each pass's size, hr_option, the hires pass's forced soft weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from inference.controlnet_crop import MaskCrop, crop_to_mask_region
from inference.controlnet_hints import control_tensor
from inference.controlnet_passes import PassControl, first_pass_is_hires, hires_control_mode, runs_in_pass
from inference.controlnet_render import generate_with_units
from inference.controlnet_units import ControlNetUnit, prepare_units
from inference.hires import HiresParams, generate_hires_batch
from inference.img2img import img2img
from inference.inpaint import Inpainter
from inference.inpaint_config import InpaintConfig
from inference.models.tiny import build_tiny
from inference.overlay import resize_and_fill
from inference.txt2img import GenerationParams
from tests.controlnet_fixtures import tiny_controlnet
from tests.test_controlnet_loading import controlnet_to_ldm
from tests.test_inpainting_model import tiny_inpainting


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def controlnets(model):
    return {"tiny": tiny_controlnet(model.unet, std=0.05)}


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A 64x64 control picture: a white square on black, off centre."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[8:40, 20:56] = 255
    path = tmp_path_factory.mktemp("cn") / "square.png"
    Image.fromarray(pixels).save(path)
    return path


def picture(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (40, 90, 200))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(220, 30, 30)
    )
    return image


def params(steps: int = 6, sampler: str = "Euler", size: int = 64) -> GenerationParams:
    return GenerationParams("a red circle", "blurry", 3, steps, 6.0, size, size, sampler=sampler)


class Recording(PassControl):
    """A PassControl that keeps each pass's wrapper: (hires_pass, total_steps, ControlledUNet)."""

    def __init__(self, control: PassControl) -> None:
        super().__init__(control.first, control.hires)
        self.passes: list = []

    def controlled(self, model, total_steps, hires_pass=False):
        wrapped, unet = super().controlled(model, total_steps, hires_pass)
        self.passes.append((hires_pass, total_steps, unet))
        return wrapped, unet


def img2img_sampling_steps(steps: int, denoising_strength: float) -> int:
    """A1111's state.sampling_steps for img2img: sample_img2img calls launch_sampling(t_enc + 1) with
    t_enc = int(min(strength, 0.999) * steps) (setup_img2img_steps); the hires pass's t_enc is its steps - 1."""
    return int(min(denoising_strength, 0.999) * steps) + 1


def extension_active_steps(total: int, start: float, end: float, run: int) -> list[bool]:
    """Per sampler step, whether the extension runs a unit: launch_sampling sets state.sampling_step = 0,
    the sampler callback sets it to d['i'] after step i, and hook.py's guidance_schedule_handler stops a
    unit when sampling_step / sampling_steps (= `total`) < start or > end. `run`: the steps the sampler
    takes (t_enc + 1 for Euler, fewer for DDIM)."""
    active, sampling_step = [], 0
    for i in range(run):
        percent = sampling_step / total
        active.append(not (percent < start or percent > end))
        sampling_step = i
    return active


def _units(model, controlnets, image_file, **fields) -> PassControl:
    unit = ControlNetUnit("tiny", str(image_file), **fields)
    return prepare_units(model, [unit], 64, 64, controlnets)


def test_img2img_weight_zero_is_plain_img2img_and_weight_one_changes_it(model, controlnets, image_file):
    plain = np.asarray(img2img(model, params(), picture(), 0.6)[0], dtype=int)
    zero = img2img(
        model, params(), picture(), 0.6, control=_units(model, controlnets, image_file, weight=0.0)
    )
    one = img2img(model, params(), picture(), 0.6, control=_units(model, controlnets, image_file))
    assert np.array_equal(np.asarray(zero[0], dtype=int), plain)
    assert np.abs(np.asarray(one[0], dtype=int) - plain).max() > 5


@pytest.mark.parametrize(
    "sampler,start,end", [("Euler", 0.5, 1.0), ("Euler", 0.0, 0.3), ("Euler", 0.3, 0.6), ("DDIM", 0.2, 1.0)]
)
def test_img2img_guidance_window_counts_the_steps_img2img_samples(
    model, controlnets, image_file, sampler, start, end
):
    control = Recording(_units(model, controlnets, image_file, guidance_start=start, guidance_end=end))
    img2img(model, params(steps=10, sampler=sampler), picture(), 0.5, control=control)
    [(hires_pass, total, unet)] = control.passes
    assert not hires_pass and total == img2img_sampling_steps(10, 0.5) == 6
    expected = extension_active_steps(6, start, end, len(unet.calls))
    assert [bool(ran) for ran in unet.calls] == expected
    assert any(expected) and not all(expected)  # the window cuts inside the sampled steps
    if sampler == "Euler":  # counting over all 10 steps, as txt2img does, would differ
        assert expected != [not (s / 10 < start or s / 10 > end) for s in [0, *range(len(unet.calls) - 1)]]


def _inpainter(model, config: InpaintConfig, box=(40, 30, 60, 40)) -> Inpainter:
    mask = Image.new("L", (128, 96))
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return Inpainter(model, picture(128, 96), mask, config, 0.75, 64, 64)


def test_inpainting_weight_zero_is_plain_inpainting_and_weight_one_changes_it(model, controlnets, image_file):
    inpainter = _inpainter(model, InpaintConfig(), box=(16, 12, 112, 84))
    plain = np.asarray(inpainter([params()])[0], dtype=int)
    inpainter.control = _units(model, controlnets, image_file, weight=0.0)
    assert np.array_equal(np.asarray(inpainter([params()])[0], dtype=int), plain)
    inpainter.control = _units(model, controlnets, image_file)
    controlled = np.asarray(inpainter([params()])[0], dtype=int)
    assert np.abs(controlled - plain).max() > 5
    inpainter.control = Recording(_units(model, controlnets, image_file, guidance_start=0.5))
    inpainter([params()])
    [(_, total, unet)] = inpainter.control.passes
    assert total == img2img_sampling_steps(6, 0.75)
    assert [bool(ran) for ran in unet.calls] == extension_active_steps(total, 0.5, 1.0, len(unet.calls))


def test_only_masked_cuts_the_units_image_to_the_pictures_crop_box(model, controlnets, image_file):
    inpainter = _inpainter(model, InpaintConfig(inpaint_full_res="Only masked", inpaint_full_res_padding=8))
    crop = inpainter.mask_crop()
    x, y, w, h = inpainter.prepared.paste
    assert crop == MaskCrop((x, y, x + w, y + h), (128, 96), (64, 64))
    source = Image.open(image_file).convert("RGB")
    # The extension: resize_image(unit's mode, image, mask size), crop, resize_image(Resize and Fill, render size).
    expected = np.asarray(
        resize_and_fill(source.resize((128, 96), Image.Resampling.LANCZOS).crop(crop.region), 64, 64)
    )
    cut = crop_to_mask_region(np.asarray(source), crop, "Just Resize")
    assert np.array_equal(cut, expected)
    unit = ControlNetUnit("tiny", str(image_file), resize_mode="Just Resize")
    [active] = prepare_units(model, [unit], 64, 64, controlnets, crop=crop).first
    assert torch.equal(active.hint, control_tensor(expected))
    unit.inpaint_crop_input_image = False  # the extension's checkbox off: the whole image
    [whole] = prepare_units(model, [unit], 64, 64, controlnets, crop=crop).first
    assert torch.equal(whole.hint, control_tensor(np.asarray(source)))
    assert ControlNetUnit("tiny", str(image_file)).infotext("m", 64, 64, None) != ControlNetUnit(
        "tiny", str(image_file), pixel_perfect=True
    ).infotext("m", 64, 64, crop)  # pixel perfect reads the cut image


def test_hires_maps_options_and_forced_soft_weights(model, controlnets, image_file):
    units = [
        ControlNetUnit("tiny", str(image_file), "canny", processor_res=64),
        ControlNetUnit("tiny", str(image_file), hr_option="Low res only"),
        ControlNetUnit(
            "tiny", str(image_file), hr_option="High res only", control_mode="ControlNet is more important"
        ),
    ]
    control = prepare_units(model, units, 64, 64, controlnets, hires_size=(128, 96))
    assert [u.hint.shape[-2:] for u in control.first] == [(64, 64)] * 2
    assert [u.hint.shape[-2:] for u in control.hires] == [(96, 128)] * 2
    # canny: Balanced in the first pass, soft scales (no cfg injection) in the hires pass.
    assert [u.control_mode for u in control.first] == ["Balanced", "Balanced"]
    assert [u.control_mode for u in control.hires] == [
        "My prompt is more important",
        "ControlNet is more important",
    ]
    # Same height: the extension counts the first pass as the hires one too.
    same = prepare_units(model, units, 64, 64, controlnets, hires_size=(128, 64))
    assert [u.control_mode for u in same.first] == [
        "My prompt is more important",
        "ControlNet is more important",
    ]
    # Without the hires fix hr_option is ignored (the extension passes BOTH).
    assert len(prepare_units(model, units, 64, 64, controlnets).first) == 3
    assert [runs_in_pass(o, h) for o in ("Both", "Low res only", "High res only") for h in (False, True)] == [
        True, True, True, False, False, True,
    ]  # fmt: skip
    assert hires_control_mode("mlsd", "Balanced") == "My prompt is more important"
    assert hires_control_mode("invert", "Balanced") == "Balanced"
    assert (
        first_pass_is_hires(64, 64) and not first_pass_is_hires(64, 128) and not first_pass_is_hires(64, None)
    )


def test_hires_fix_passes_are_controlled_with_their_own_maps_and_windows(model, controlnets, image_file):
    hires = HiresParams(scale=2.0, steps=4, denoising_strength=0.9)
    first = params(steps=4)
    plain = np.asarray(generate_hires_batch(model, [first], hires)[0], dtype=int)

    def render(**fields):
        unit = ControlNetUnit("tiny", str(image_file), **fields)
        control = Recording(prepare_units(model, [unit], 64, 64, controlnets, hires_size=(128, 128)))
        return np.asarray(generate_hires_batch(model, [first], hires, control=control)[0], dtype=int), control

    zero, _ = render(weight=0.0)
    assert np.array_equal(zero, plain)
    both, _ = render()
    _, control = render(guidance_start=0.5)
    [(hires_pass, total, unet)] = control.passes  # the first pass wraps through sample_controlled_latents
    assert hires_pass and total == 4 and unet.units[0].hint.shape[-2:] == (128, 128)
    # The hires pass runs exactly 4 steps, its window over those 4 (the extension's t_enc + 1).
    assert [bool(ran) for ran in unet.calls] == extension_active_steps(4, 0.5, 1.0, 4)
    low, low_control = render(hr_option="Low res only")
    high, _ = render(hr_option="High res only")
    assert low_control.passes[0][2].calls == [0, 0, 0, 0]
    for image in (both, low, high):
        assert np.abs(image - plain).max() > 5
    assert np.abs(low - high).max() > 5


def test_an_inpainting_model_takes_a_controlnet_file_of_its_base_model(tmp_path, image_file):
    # The extension feeds a 4-channel ControlNet the latents only (x[:, :4]) on a 9-channel inpainting UNet.
    inpainting = tiny_inpainting()
    path = tmp_path / "control_tiny.safetensors"
    save_file(controlnet_to_ldm(tiny_controlnet(build_tiny(seed=0).unet, std=0.05)), path)
    inpainter = _inpainter(inpainting, InpaintConfig(), box=(16, 12, 112, 84))
    plain = np.asarray(inpainter([params(steps=3)])[0], dtype=int)
    unit = ControlNetUnit(str(path), str(image_file))
    inpainter.control = prepare_units(inpainting, [unit], 64, 64)
    assert inpainter.control.first[0].model.config.in_channels == 4
    assert np.abs(np.asarray(inpainter([params(steps=3)])[0], dtype=int) - plain).max() > 5


def test_python_api_renders_img2img_and_the_hires_fix_with_units(model, controlnets, image_file):
    unit = ControlNetUnit("tiny", str(image_file), weight=0.8)
    hires = HiresParams(scale=1.5, steps=2, denoising_strength=0.7)
    ours = generate_with_units(model, [params(steps=3)], [unit], controlnets, hires=hires)
    control = prepare_units(model, [unit], 64, 64, controlnets, hires_size=(96, 96))
    expected = generate_hires_batch(model, [params(steps=3)], hires, control=control)
    assert ours[0].size == (96, 96) and np.array_equal(np.asarray(ours[0]), np.asarray(expected[0]))
    ours = generate_with_units(
        model, [params(steps=3)], [unit], controlnets, init_image=picture(), denoising_strength=0.5
    )
    expected = img2img(
        model, params(steps=3), picture(), 0.5, control=prepare_units(model, [unit], 64, 64, controlnets)
    )
    assert np.array_equal(np.asarray(ours[0]), np.asarray(expected[0]))
