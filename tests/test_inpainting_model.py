"""Inpainting models (a 9-channel UNet, random weights here): the conditioning A1111 feeds them, txt2img,
img2img and inpainting through the wrapper, and a single-file checkpoint that loads as one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel
from omegaconf import OmegaConf
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from data.typed_config import to_typed
from inference.cli import RenderConfig, render
from inference.img2img import images_to_tensor
from inference.infotext import parse_infotext, read_infotext
from inference.inpaint import Inpainter
from inference.inpaint_config import InpaintConfig
from inference.inpainting_unet import (
    encode_pixels,
    for_txt2img,
    inpainting_conditioning,
    is_inpainting_unet,
    txt2img_conditioning,
)
from inference.models import ldm_config
from inference.models.ldm_export import bundle_to_ldm, original_config
from inference.models.single_file import load_single_file
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams, generate_batch


def tiny_inpainting(seed: int = 0):
    """The tiny model with a random 9-channel UNet: [latents, mask, masked-picture latents] in."""
    bundle = build_tiny(seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**bundle.unet.config, "in_channels": 9})
    model = dataclasses.replace(bundle, unet=unet)
    model.freeze()
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_inpainting()


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return image


MASK = Image.new("L", (64, 64), 0)
ImageDraw.Draw(MASK).rectangle((0, 0, 31, 63), fill=255)  # the left half


class UnetInputs:
    """The inputs the wrapped UNet receives."""

    def __init__(self, unet) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(lambda _m, args: self.inputs.append(args[0].clone()))

    def __enter__(self) -> UnetInputs:
        return self

    def __exit__(self, *_exc) -> None:
        self.handle.remove()


def params(seed: int = 3, **kwargs) -> GenerationParams:
    return GenerationParams(
        "a red circle", seed=seed, steps=3, width=64, height=64, sampler="Euler", **kwargs
    )


def test_the_conditioning_is_the_rounded_mask_and_the_masked_picture_latents(model):
    pixels = images_to_tensor([picture()], 64, 64) * 2 - 1
    left = pixels.clone()
    left[..., :32] = 0  # masked: grey (0 in [-1, 1])
    with torch.no_grad():
        full = inpainting_conditioning(model, pixels, MASK, 1.0, (8, 8))
        none = inpainting_conditioning(model, pixels, MASK, 0.0, (8, 8))
        no_mask = inpainting_conditioning(model, pixels, None, 1.0, (8, 8))
        assert torch.equal(full[:, 1:], encode_pixels(model, left))
        assert torch.equal(none[:, 1:], encode_pixels(model, pixels))  # weight 0: the whole picture shows
        assert torch.equal(no_mask[:, 1:], encode_pixels(model, torch.zeros_like(pixels)))
    assert full.shape == (1, 5, 8, 8) and full[0, 0, :, :4].eq(1).all() and full[0, 0, :, 4:].eq(0).all()
    assert no_mask[:, 0].eq(1).all()


def test_txt2img_feeds_a1111s_all_masked_grey_conditioning(model):
    assert is_inpainting_unet(model.unet)
    with UnetInputs(model.unet) as seen, torch.no_grad():
        images = generate_batch(for_txt2img(model), [params(), params(seed=4)])
        expected = txt2img_conditioning(model, 64, 64)
    assert len(images) == 2 and images[0].size == (64, 64)
    assert all(x.shape == (4, 9, 8, 8) for x in seen.inputs)  # CFG: 2 images x (uncond, cond)
    assert all(torch.equal(x[:, 4:], expected.expand(4, -1, -1, -1)) for x in seen.inputs)


def test_inpainting_model_inpaints_with_the_mask_in_its_input(model):
    with UnetInputs(model.unet) as seen:
        inpainter = Inpainter(model, picture(), MASK, InpaintConfig(mask_blur=0), 0.75, 64, 64)
        out = np.asarray(inpainter([params()])[0]).astype(int)
    assert seen.inputs and all(x.shape[1] == 9 for x in seen.inputs)
    assert seen.inputs[0][:, 4, :, :4].eq(1).all() and seen.inputs[0][:, 4, :, 4:].eq(0).all()
    assert np.array_equal(out[:, 32:], np.asarray(picture())[:, 32:])  # the right half is kept
    assert inpainter.fields["Conditional mask weight"] == "1.0"
    weaker = Inpainter(
        model, picture(), MASK, InpaintConfig(mask_blur=0, inpainting_mask_weight=0.0), 0.75, 64, 64
    )
    assert not np.array_equal(np.asarray(weaker([params()])[0]), out)  # the weight reaches the UNet


def test_img2img_on_an_inpainting_model_without_a_mask(model):
    inpainter = Inpainter(model, picture(), None, InpaintConfig(), 0.5, 64, 64)
    with UnetInputs(model.unet) as seen:
        image = inpainter([params()])[0]
    assert image.size == (64, 64) and seen.inputs[0][:, 4].eq(1).all()  # all masked, as A1111
    assert inpainter.fields == {"Denoising strength": 0.5, "Conditional mask weight": "1.0"}


def _write_single_file(model, path, with_yaml: bool):
    save_file({k: v.contiguous() for k, v in bundle_to_ldm(model).items()}, path)
    if with_yaml:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(original_config(model)))
    return path


def test_single_file_inpainting_checkpoint_builds_a_9_channel_unet(tmp_path, model, monkeypatch):
    tokenizer = tmp_path / "tokenizer"
    model.tokenizer.save_pretrained(tokenizer)
    with_yaml = load_single_file(
        _write_single_file(model, tmp_path / "a-inpainting.safetensors", True), str(tokenizer)
    )
    assert with_yaml.unet.config.in_channels == 9
    assert torch.equal(with_yaml.unet.conv_in.weight, model.unet.conv_in.weight)
    # Without a .yaml the built-in config (4 channels) is used: the weights' (C, 9, 3, 3) input decides.
    built_in = original_config(model)
    built_in["model"]["params"]["unet_config"]["params"]["in_channels"] = 4
    monkeypatch.setattr(ldm_config, "default_original_config", lambda family="sd1": built_in)
    path = _write_single_file(model, tmp_path / "b-inpainting.safetensors", False)
    loaded = load_single_file(path, str(tokenizer))
    assert loaded.unet.config.in_channels == 9 and loaded.unet.conv_in.weight.shape[1] == 9

    # The command line renders with it: inpainting, with A1111's "Conditional mask weight" in the infotext.
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    picture().save(init)
    MASK.save(mask)
    config = to_typed(RenderConfig, OmegaConf.create({
        "prompt": "a red circle", "model": str(path), "tokenizer": str(tokenizer), "steps": 3, "seed": 5,
        "init_image": str(init), "out": str(tmp_path / "out"), "inpaint": {"mask": str(mask), "mask_blur": 0},
    }))  # fmt: skip
    written = render(config).paths[0]
    info = parse_infotext(read_infotext(written))
    assert info["Conditional mask weight"] == "1.0" and "Mask blur" not in info
    assert np.array_equal(np.asarray(Image.open(written))[:, 32:], np.asarray(picture())[:, 32:])
    # txt2img with the hires fix: the all-masked conditioning at each pass's size; A1111 writes the weight.
    hires = dataclasses.replace(
        config, init_image=None, hires=dataclasses.replace(config.hires, enabled=True, scale=1.5)
    )
    written = render(hires).paths[0]
    assert Image.open(written).size == (96, 96)
    assert parse_infotext(read_infotext(written))["Conditional mask weight"] == "1.0"
