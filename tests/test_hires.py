"""Hires fix: target size and crop, the latent and pixel upscalers, the two passes, infotext and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from data.typed_config import ConfigError
from inference.cli import load_render_config, quote_prompt_overrides
from inference.hires import (
    HiresParams,
    HiresTarget,
    crop_latents,
    generate_hires_batch,
    hires_size,
    hires_target,
)
from inference.infotext import (
    format_infotext,
    hires_fields,
    hires_from_infotext,
    parse_infotext,
    read_infotext,
)
from inference.models.loading import load_base_model
from inference.txt2img import GenerationParams
from inference.upscalers import LATENT_UPSCALE_MODES, upscale_image, upscale_latents
from train.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return load_base_model(ModelConfig(kind="tiny"))


def first_pass(**overrides) -> GenerationParams:
    values = dict(prompt="a red circle", seed=3, steps=3, width=64, height=48, sampler="Euler")
    return GenerationParams(**{**values, **overrides})


@pytest.mark.parametrize(
    ("size", "hires", "expected"),
    [
        ((64, 48), HiresParams(scale=2), (128, 96)),
        ((64, 48), HiresParams(scale=1.5), (96, 72)),
        ((64, 48), HiresParams(resize_x=128), (128, 96)),  # height follows the aspect ratio
        ((64, 48), HiresParams(resize_y=96), (128, 96)),  # width follows the aspect ratio
        ((64, 48), HiresParams(resize_x=128, resize_y=128), (128, 128)),  # cover, then crop
        ((512, 768), HiresParams(resize_x=1024, resize_y=1024), (1024, 1024)),
    ],
)
def test_hires_output_size(size, hires, expected):
    assert hires_size(*size, hires) == expected


def test_resize_to_another_aspect_covers_then_crops_centred():
    # A1111: 64x48 to 128x128 upscales to 170x128 and crops (170 - 128) // 8 = 5 latent columns.
    assert hires_target(64, 48, HiresParams(resize_x=128, resize_y=128)) == HiresTarget(170, 128, 5, 0)
    assert hires_target(512, 768, HiresParams(resize_x=1024, resize_y=1024)) == HiresTarget(1024, 1536, 0, 64)
    latents = torch.arange(21.0).expand(1, 4, 16, 21)
    cropped = crop_latents(latents, HiresTarget(170, 128, 5, 0))
    assert cropped.shape == (1, 4, 16, 16)
    assert (cropped[0, 0, 0, 0], cropped[0, 0, 0, -1]) == (2, 17)  # 2 columns off the left, 3 off the right


@pytest.mark.parametrize("mode", list(LATENT_UPSCALE_MODES))
def test_each_latent_mode_resizes_to_the_asked_shape(mode):
    latents = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    assert upscale_latents(latents, mode, 16, 12).shape == (2, 4, 16, 12)
    assert upscale_latents(latents, mode, 5, 4).shape == (2, 4, 5, 4)


def test_antialiasing_differs_from_plain_interpolation_where_torch_applies_it():
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def up(mode: str, size: tuple[int, int] = (16, 16)) -> torch.Tensor:
        return upscale_latents(latents, mode, *size)

    # Bilinear antialiasing only widens the kernel when shrinking; bicubic's uses another cubic (a = -0.5).
    torch.testing.assert_close(up("Latent (antialiased)"), up("Latent"), atol=1e-5, rtol=0)
    assert not torch.allclose(up("Latent (antialiased)", (5, 5)), up("Latent", (5, 5)), atol=1e-3)
    assert not torch.allclose(up("Latent (bicubic antialiased)"), up("Latent (bicubic)"), atol=1e-3)
    assert not torch.allclose(up("Latent (nearest)", (12, 12)), up("Latent (nearest-exact)", (12, 12)))
    with pytest.raises(ValueError, match="not a latent upscale mode"):
        upscale_latents(latents, "Lanczos", 16, 16)


def test_pixel_upscalers():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (44, 60, 3), dtype=np.uint8))
    plain, lanczos = upscale_image(image, "None", 90, 66), upscale_image(image, "Lanczos", 90, 66)
    assert plain.size == lanczos.size == (90, 66)
    # Lanczos goes through A1111's multiple-of-8 size (88x64) on the way; None resizes once.
    assert not np.array_equal(np.asarray(plain), np.asarray(lanczos))
    exact = upscale_image(image.resize((64, 48)), "Lanczos", 128, 96)
    assert np.array_equal(
        np.asarray(exact), np.asarray(upscale_image(image.resize((64, 48)), "None", 128, 96))
    )


@pytest.mark.parametrize("upscaler", ["Latent (antialiased)", "Lanczos"])
def test_two_passes_render_the_target_size_deterministically(tiny, upscaler):
    hires = HiresParams(upscaler, scale=1.5, denoising_strength=0.6)
    batch = [first_pass(), first_pass(seed=4, prompt="a blue square")]
    together = generate_hires_batch(tiny, batch, hires)
    assert [image.size for image in together] == [(96, 72), (96, 72)]
    alone = generate_hires_batch(tiny, [batch[1]], hires)[0]
    assert np.abs(np.asarray(together[1], dtype=int) - np.asarray(alone, dtype=int)).max() <= 1
    again = generate_hires_batch(tiny, [batch[1]], hires)[0]
    assert np.array_equal(np.asarray(alone), np.asarray(again))


def count_unet_calls(model, render) -> int:
    calls = []
    handle = model.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        render()
    finally:
        handle.remove()
    return len(calls)


def test_the_second_pass_runs_exactly_the_hires_steps(tiny):
    batch = [first_pass(steps=3)]  # Euler: one UNet call a step
    assert count_unet_calls(tiny, lambda: generate_hires_batch(tiny, batch, HiresParams(steps=5))) == 3 + 5
    assert count_unet_calls(tiny, lambda: generate_hires_batch(tiny, batch, HiresParams(steps=0))) == 3 + 3
    resized = generate_hires_batch(tiny, batch, HiresParams(resize_x=128, resize_y=128, steps=1))
    assert resized[0].size == (128, 128)


def test_settings_no_pass_can_use_are_refused(tiny):
    with pytest.raises(ValueError, match="unknown hires upscaler"):
        HiresParams("ESRGAN_4x").validate()
    with pytest.raises(ValueError, match="unknown hires sampler"):
        HiresParams(sampler="Bogus sampler").validate()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        HiresParams(denoising_strength=0).validate()


def test_infotext_keys_follow_a1111_and_parse_back():
    params = first_pass(width=512, height=512, steps=20, clip_skip=2)
    hires = HiresParams("Latent", scale=2.0, steps=10, prompt="a red circle, detailed", sampler="Euler a")
    text = format_infotext(params, {**hires_fields(params, hires), "Lora hashes": "a: 1"})
    # RNG has a fixed place in A1111's infotext; the hires keys follow the fixed ones, in A1111's order.
    assert text.endswith(
        "Size: 512x512, Denoising strength: 0.7, Clip skip: 2, RNG: CPU, Hires sampler: Euler a, "
        'Hires prompt: "a red circle, detailed", Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, '
        'Lora hashes: "a: 1"'
    )
    assert hires_from_infotext(parse_infotext(text)) == hires
    resize = HiresParams("Latent (nearest-exact)", resize_x=1024, resize_y=768, denoising_strength=0.45)
    fields = hires_fields(params, resize)
    assert list(fields) == ["Denoising strength", "Hires resize", "Hires upscaler"]  # steps 0: not written
    assert hires_from_infotext(parse_infotext(format_infotext(params, fields))) == resize
    same = hires_fields(params, HiresParams(prompt=params.prompt, sampler=params.sampler))
    assert "Hires prompt" not in same and "Hires sampler" not in same
    assert hires_from_infotext(parse_infotext(format_infotext(params))) is None


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        cfg = compose("txt2img", overrides=quote_prompt_overrides(["prompt=a", *overrides]))
    return load_render_config(cfg)


def test_config_reads_the_hires_group_and_refuses_bad_values(tmp_path):
    typed = config("hires.enabled=true", "hires.scale=1.5", "hires.upscaler=Latent (antialiased)")
    assert (typed.hires.enabled, typed.hires.scale, typed.hires.upscaler) == (
        True,
        1.5,
        "Latent (antialiased)",
    )
    assert typed.hires.params().denoising_strength == 0.7 and typed.init_image is None
    with pytest.raises(ConfigError, match="unknown hires upscaler"):
        config("hires.enabled=true", "hires.upscaler=Bogus")
    with pytest.raises(ConfigError, match="unknown hires sampler"):
        config("hires.enabled=true", "hires.sampler=Bogus")
    with pytest.raises(ConfigError, match="other <lora:...> tags"):
        config("prompt=a <lora:x:1>", "hires.enabled=true", "hires.prompt=b <lora:y:1>")
    Image.new("RGB", (8, 8)).save(tmp_path / "init.png")
    with pytest.raises(ConfigError, match="hires fix is for txt2img"):
        config("hires.enabled=true", f"init_image={tmp_path / 'init.png'}")
    with pytest.raises(ConfigError, match="is not a file"):
        config(f"init_image={tmp_path / 'missing.png'}")


def test_cli_with_hires_writes_a_bigger_png(tmp_path):
    command = [
        sys.executable, "-m", "inference", "model=tiny", "steps=2", "width=64", "height=64", "seed=5",
        "prompt=a red circle", "hires.enabled=true", "hires.scale=2", "hires.upscaler=Latent (antialiased)",
        "hires.steps=2", f"out={tmp_path}",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "00000-5.png"
    assert Image.open(path).size == (128, 128)
    info = parse_infotext(read_infotext(path))
    assert (info["Size"], info["Hires upscale"], info["Hires upscaler"]) == (
        "64x64",
        "2",
        "Latent (antialiased)",
    )
    assert (info["Denoising strength"], info["Hires steps"]) == ("0.7", "2")
