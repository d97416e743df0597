"""img2img: A1111's step arithmetic, where sampling starts, determinism, batching, the VAE round trip, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inference.img2img import Img2ImgSteps, encode_images, img2img, img2img_steps
from inference.infotext import format_infotext, img2img_fields, parse_infotext, read_infotext
from inference.models.loading import load_base_model
from inference.timestep_samplers import ddim_timesteps
from inference.txt2img import GenerationParams, decode_latents
from train.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
FAST = dict(width=64, height=64)


@pytest.fixture(scope="module")
def tiny():
    return load_base_model(ModelConfig(kind="tiny"))


@pytest.fixture(scope="module")
def toy():
    """The bundled model: its VAE is trained, so a round trip keeps the picture."""
    model = load_base_model(ModelConfig(kind="toy"))
    model.freeze()
    return model


def picture(width: int = 64, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (40, 90, 200))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(220, 30, 30)
    )
    return image


class UnetCalls:
    """Records the timestep of every UNet call (one per sampler evaluation: CFG batches both halves)."""

    def __init__(self, model) -> None:
        self.timesteps: list[float] = []
        self.handle = model.unet.register_forward_pre_hook(self._record)

    def _record(self, _module, args) -> None:
        self.timesteps.append(float(torch.as_tensor(args[1]).reshape(-1)[0]))

    def __enter__(self) -> UnetCalls:
        return self

    def __exit__(self, *_exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize(
    ("steps", "strength", "fix", "expected", "start", "sampled"),
    [
        (20, 0.75, False, Img2ImgSteps(20, 15), 4, 16),  # A1111's familiar 16 steps at 0.75
        (20, 1.0, False, Img2ImgSteps(20, 19), 0, 20),  # 1.0 is read as 0.999
        (10, 0.3, False, Img2ImgSteps(10, 3), 6, 4),
        (4, 0.0, False, Img2ImgSteps(4, 0), 3, 1),  # strength 0 still takes one step at the lowest sigma
        (20, 0.75, True, Img2ImgSteps(26, 19), 6, 20),  # fixed steps: int(20 / 0.75) built, 20 run
        (10, 1.0, True, Img2ImgSteps(10, 9), 0, 10),
    ],
)
def test_step_arithmetic_matches_a1111(steps, strength, fix, expected, start, sampled):
    plan = img2img_steps(steps, strength, fix_steps=fix)
    assert plan == expected
    assert (plan.start, plan.sampler_steps) == (start, sampled)


def test_requested_steps_fix_the_count_and_bad_strengths_are_refused():
    assert img2img_steps(20, 0.5, requested_steps=5) == Img2ImgSteps(10, 4)
    assert img2img_steps(20, 0.5, requested_steps=0) == Img2ImgSteps(40, 19)  # 0: the first pass's steps
    with pytest.raises(ValueError, match="between 0 and 1"):
        img2img_steps(20, 1.5)
    with pytest.raises(ValueError, match="above 0"):
        img2img_steps(20, 0.0, fix_steps=True)


@pytest.mark.parametrize(("strength", "fix", "calls"), [(0.5, False, 6), (1.0, False, 10), (0.5, True, 10)])
def test_euler_calls_the_unet_once_per_planned_step_from_the_planned_sigma(tiny, strength, fix, calls):
    params = GenerationParams("a red circle", seed=1, steps=10, sampler="Euler", **FAST)
    with UnetCalls(tiny) as recorded:
        img2img(tiny, params, picture(), strength, fix_steps=fix)
    plan = img2img_steps(10, strength, fix_steps=fix)
    assert len(recorded.timesteps) == calls == plan.sampler_steps
    # Euler's "Automatic" schedule is Normal: evenly spaced timesteps 999 → 0; sampling starts at plan.start.
    expected = torch.linspace(999, 0, plan.steps, dtype=torch.float64)[plan.start]
    assert recorded.timesteps[0] == pytest.approx(float(expected), abs=1e-2)


def test_ddim_starts_at_its_timestep_list_like_a1111(tiny):
    params = GenerationParams("a red circle", seed=1, steps=10, sampler="DDIM", **FAST)
    with UnetCalls(tiny) as recorded:
        img2img(tiny, params, picture(), 0.5)
    # t_enc = 5: noised to timesteps[5], then A1111 steps down timesteps[:5], i.e. 4 calls from timesteps[4].
    assert len(recorded.timesteps) == 4
    assert recorded.timesteps[0] == pytest.approx(float(ddim_timesteps(10)[4]), abs=0.5)


def test_same_seed_same_pixels_and_batches_do_not_change_an_image(tiny):
    batch = [
        GenerationParams("a red circle", seed=3, steps=4, sampler="Euler a", **FAST),
        GenerationParams("a blue square", "blurry", seed=4, steps=4, sampler="Euler a", **FAST),
    ]
    together = img2img(tiny, batch, picture(), 0.6)
    for params, image in zip(batch, together, strict=True):
        alone = np.asarray(img2img(tiny, params, picture(), 0.6)[0], dtype=int)
        assert np.abs(np.asarray(image, dtype=int) - alone).max() <= 1
    again = img2img(tiny, batch[0], picture(), 0.6)[0]
    assert np.array_equal(np.asarray(again), np.asarray(img2img(tiny, batch[0], picture(), 0.6)[0]))
    other_seed = GenerationParams("a red circle", seed=5, steps=4, sampler="Euler a", **FAST)
    assert not np.array_equal(np.asarray(again), np.asarray(img2img(tiny, other_seed, picture(), 0.6)[0]))


def test_strength_near_zero_is_the_vae_round_trip(toy):
    init = picture()
    with torch.no_grad():
        round_trip = np.asarray(decode_latents(toy, encode_images(toy, [init], 64, 64))[0], dtype=float)
    params = GenerationParams("a red circle", seed=2, steps=20, sampler="Euler", **FAST)
    kept = np.asarray(img2img(toy, params, init, 0.0)[0], dtype=float)
    changed = np.asarray(img2img(toy, params, init, 0.9)[0], dtype=float)
    assert np.abs(kept - round_trip).mean() < 2.0
    assert np.abs(changed - round_trip).mean() > 5 * np.abs(kept - round_trip).mean()


def test_init_images_are_resized_and_encoded_deterministically(tiny):
    params = GenerationParams("x", seed=1, steps=2, width=48, height=32)
    (image,) = img2img(tiny, params, picture(100, 70), 0.5)
    assert image.size == (48, 32)
    with torch.no_grad():
        first = encode_images(tiny, [picture(100, 70)], 48, 32)
        assert first.shape == (1, 4, 4, 6) and torch.equal(
            first, encode_images(tiny, [picture(100, 70)], 48, 32)
        )
    with pytest.raises(ValueError, match="one init image, or one per image"):
        img2img(tiny, [params, params, params], [picture(), picture()], 0.5)


def test_unipc_starts_its_time_grid_just_above_the_last_timestep_left(tiny):
    params = GenerationParams("a red circle", seed=1, steps=10, sampler="UniPC", **FAST)
    with UnetCalls(tiny) as recorded:
        image = img2img(tiny, params, picture(), 0.5)[0]
    # t_enc = 5: A1111 samples timesteps[:5] with UniPC from t_start = (timesteps[4] + 1) / 1000: 5 calls,
    # on a uniform grid from timesteps[4] down towards 0: the fifth call is at a fifth of timesteps[4].
    assert len(recorded.timesteps) == 5
    assert recorded.timesteps[0] == pytest.approx(float(ddim_timesteps(10)[4]), abs=0.5)
    assert recorded.timesteps[-1] == pytest.approx(float(ddim_timesteps(10)[4]) / 5, abs=0.5)
    assert not np.array_equal(np.asarray(image), np.asarray(img2img(tiny, params, picture(), 0.9)[0]))


def test_infotext_records_the_denoising_strength_where_a1111_puts_it():
    params = GenerationParams("a cat", seed=1, steps=20, width=64, height=64, clip_skip=2)
    text = format_infotext(params, {**img2img_fields(0.75), "Lora hashes": "a: 1"})
    assert text.endswith(
        'Seed: 1, Size: 64x64, Denoising strength: 0.75, Clip skip: 2, RNG: CPU, Lora hashes: "a: 1"'
    )
    assert parse_infotext(text)["Denoising strength"] == "0.75"


def test_cli_renders_img2img_from_an_init_image(tmp_path):
    picture(80, 80).save(tmp_path / "init.png")
    command = [
        sys.executable, "-m", "inference", "model=tiny", "steps=4", "width=64", "height=64", "seed=9",
        "prompt=a red circle", f"init_image={tmp_path / 'init.png'}", "denoising_strength=0.5",
        f"out={tmp_path / 'out'}",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "00000-9.png"
    assert Image.open(path).size == (64, 64)
    info = parse_infotext(read_infotext(path))
    assert (info["Denoising strength"], info["Size"], info["Steps"]) == ("0.5", "64x64", "4")
