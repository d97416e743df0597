"""Inpainting on the tiny model: what is kept, what changes, each masked-content mode, "Only masked", the
infotext, and one run of `python -m inference ... inpaint.mask=...`.

Tolerance for kept pixels: 0. Wherever the blurred mask is 0 the overlay is the original pixel at full
opacity (A1111's apply_overlay), so the VAE round trip never shows there; pixels where the blurred mask is
above 0 mix original and render and are not compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inference.img2img import images_to_tensor
from inference.infotext import format_infotext, parse_infotext, read_infotext
from inference.inpaint import Inpainter, MaskBlend, latent_masks
from inference.inpaint_config import InpaintConfig
from inference.inpainting_unet import encode_pixels
from inference.models.loading import load_base_model
from inference.noise import PerImageNoise
from inference.txt2img import GenerationParams
from train.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy():
    model = load_base_model(ModelConfig(kind="toy"))
    model.freeze()
    return model


@pytest.fixture(scope="module")
def tiny():
    model = load_base_model(ModelConfig(kind="tiny"))
    model.freeze()
    return model


def picture(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (40, 90, 200))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(220, 30, 30)
    )
    return image


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


MASK = box_mask((64, 64), (8, 8, 40, 32))


def params(seed: int = 1, sampler: str = "Euler a", **kwargs) -> GenerationParams:
    return GenerationParams(
        "a red circle", seed=seed, steps=4, width=64, height=64, sampler=sampler, **kwargs
    )


def render(model, config: InpaintConfig, init=None, mask=MASK, strength=0.75, batch=None) -> Inpainter:
    inpainter = Inpainter(model, init or picture(), mask, config, strength, 64, 64)
    inpainter.images = inpainter(batch or [params()])
    return inpainter


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM"])
def test_pixels_outside_the_blurred_mask_are_kept_and_masked_ones_change(tiny, sampler):
    inpainter = render(tiny, InpaintConfig(), batch=[params(sampler=sampler)])
    out = np.asarray(inpainter.images[0]).astype(int)
    original = np.asarray(picture()).astype(int)
    blurred = np.asarray(inpainter.prepared.mask)
    assert np.array_equal(out[blurred == 0], original[blurred == 0])  # tolerance 0: the overlay is opaque
    assert (blurred == 0).sum() > 2000  # most of the picture is kept
    changed = np.abs(out - original)[blurred >= 128].mean()  # the render alone shows there
    assert changed > 20, changed


def test_latents_keep_the_init_outside_the_mask_at_every_step_and_at_the_end():
    init, denoised = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    keep, repaint = latent_masks(box_mask((64, 64), (0, 0, 32, 64)), 8, 8)
    assert keep[0, 0, :, :4].eq(0).all() and keep[0, 0, :, 4:].eq(1).all()  # left half repainted
    blended = MaskBlend(lambda x, sigma: denoised, init, keep, repaint)(init, torch.ones(2))
    assert torch.equal(blended[..., 4:], init[..., 4:]) and torch.equal(blended[..., :4], denoised[..., :4])


def test_sampled_latents_equal_the_init_latents_where_the_latent_mask_keeps(tiny):
    inpainter = Inpainter(tiny, picture(), MASK, InpaintConfig(), 0.75, 64, 64)
    with torch.no_grad():
        latents = inpainter._sample([params(), params(seed=2)])
        init = encode_pixels(tiny, images_to_tensor([inpainter.prepared.image], 64, 64) * 2 - 1)
    kept = latent_masks(inpainter.prepared.mask, 8, 8)[0].expand_as(latents).bool()
    assert 0 < kept.sum() < kept.numel() and torch.equal(latents[kept], init.expand_as(latents)[kept])


def test_each_masked_content_mode_starts_from_its_own_latents(tiny):
    inpainter = {mode: Inpainter(tiny, picture(), MASK, InpaintConfig(inpainting_fill=mode), 0.75, 64, 64)
                 for mode in ("fill", "original", "latent noise", "latent nothing")}  # fmt: skip
    init = torch.randn(1, 4, 8, 8)
    keep, repaint = latent_masks(MASK, 8, 8)
    batch = [params(seed=5)]
    seed_noise = PerImageNoise.from_seeds([5], (4, 8, 8)).randn()
    noise = inpainter["latent noise"]._masked_content(init, keep, repaint, batch)
    assert torch.equal(noise, init * keep + seed_noise * repaint)  # A1111: the seed's first noise
    nothing = inpainter["latent nothing"]._masked_content(init, keep, repaint, batch)
    assert torch.equal(nothing, init * keep) and nothing[repaint.bool().expand_as(init)].eq(0).all()
    assert torch.equal(inpainter["original"]._masked_content(init, keep, repaint, batch), init)
    # "fill" (and the latent modes, as A1111) repaint the picture under the mask before it is encoded.
    filled, original = (np.asarray(inpainter[m].prepared.image).astype(int) for m in ("fill", "original"))
    under = np.asarray(inpainter["fill"].prepared.mask) > 0
    assert np.abs(filled - original)[under].mean() > 5 and np.abs(filled - original)[~under].max() <= 1


def test_each_masked_content_mode_changes_the_masked_pixels_only(toy):
    """On the bundled model (its VAE is trained, so content survives the round trip) at strength 0.5."""
    outputs = {}
    for mode in ("fill", "original", "latent noise", "latent nothing"):
        inpainter = render(toy, InpaintConfig(inpainting_fill=mode), strength=0.5)
        outputs[mode] = np.asarray(inpainter.images[0]).astype(int)
    kept = np.asarray(inpainter.prepared.mask) == 0
    # Measured: fill 2.9 levels from original on average under the mask, latent noise 28, latent nothing 22.
    for mode, least in (("fill", 1.5), ("latent noise", 10), ("latent nothing", 10)):
        assert np.array_equal(outputs[mode][kept], outputs["original"][kept])
        assert np.abs(outputs[mode] - outputs["original"])[~kept].mean() > least, mode
    assert np.abs(outputs["latent noise"] - outputs["latent nothing"])[~kept].mean() > 3


def test_only_masked_renders_the_box_at_full_size_and_pastes_it_back(tiny):
    init = picture(128, 96)
    mask = box_mask((128, 96), (40, 30, 60, 40))
    config = InpaintConfig(inpaint_full_res="Only masked", inpaint_full_res_padding=8)
    shapes = []
    handle = tiny.unet.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    try:
        inpainter = render(tiny, config, init=init, mask=mask)
    finally:
        handle.remove()
    assert {shape[-2:] for shape in shapes} == {(8, 8)}  # the 64x64 render size, not 128x96
    out = np.asarray(inpainter.images[0]).astype(int)
    assert out.shape == (96, 128, 3)  # the picture's own size
    x, y, w, h = inpainter.prepared.paste
    outside = np.ones((96, 128), bool)
    outside[y : y + h, x : x + w] = False
    assert np.array_equal(out[outside], np.asarray(init).astype(int)[outside])
    assert np.abs(out - np.asarray(init))[32:38, 44:56].mean() > 20  # under the mask: repainted


def test_a_mask_of_another_size_is_resized_to_the_picture(tiny):
    small = box_mask((32, 32), (4, 4, 20, 16))  # the same box as MASK at half size
    a, b = (render(tiny, InpaintConfig(mask_blur=0), mask=m).prepared.mask for m in (small, MASK))
    assert np.abs(np.asarray(a).astype(int) - np.asarray(b)).mean() < 8


def test_infotext_has_a1111s_inpaint_keys_only_where_a1111_writes_them(tiny):
    whole = render(tiny, InpaintConfig())
    assert whole.fields == {"Denoising strength": 0.75, "Mask blur": 4}
    config = InpaintConfig(
        mask_blur=0, inpainting_mask_invert="Inpaint not masked", inpainting_fill="latent noise",
        inpaint_full_res="Only masked", inpaint_full_res_padding=32,
    )  # fmt: skip
    text = format_infotext(params(), render(tiny, config).fields)
    assert "Denoising strength: 0.75" in text and text.endswith(  # A1111: after its fixed keys
        "RNG: CPU, Mask mode: Inpaint not masked, Inpaint area: Only masked, "
        "Masked area padding: 32, Masked content: latent noise"
    )
    assert "Conditional mask weight" not in text  # a plain model: no inpainting conditioning
    assert render(tiny, InpaintConfig(inpainting_fill="fill")).fields["Masked content"] == "fill"


@pytest.mark.slow  # a python -m inference subprocess (about 18 s); the in-process tests cover the logic
def test_inpainting_from_the_command_line(tmp_path):
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    picture().save(init)
    strokes = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # a drawn mask: opaque strokes, transparent canvas
    ImageDraw.Draw(strokes).rectangle((8, 8, 39, 31), fill=(255, 255, 255, 255))
    strokes.save(mask)
    command = [
        sys.executable, "-m", "inference", "model=tiny", "prompt=a red circle", "steps=4", "seed=9",
        f"init_image={init}", f"inpaint.mask={mask}", "inpaint.mask_blur=2", f"out={tmp_path / 'out'}",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "00000-9.png"
    info = parse_infotext(read_infotext(path))
    assert (info["Denoising strength"], info["Mask blur"]) == ("0.75", "2")
    out, original = np.asarray(Image.open(path)).astype(int), np.asarray(picture()).astype(int)
    assert np.array_equal(out[48:], original[48:]) and np.abs(out - original)[12:28, 12:36].mean() > 20
