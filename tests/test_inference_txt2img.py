"""Text encoding, txt2img determinism, A1111 infotext and PNG chunks, and grid layout on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from inference.grid import make_grid
from inference.infotext import format_infotext, params_from_infotext, parse_infotext, read_infotext, save_png
from inference.models.tiny import build_tiny
from inference.text_encoding import encode_cond_uncond, encode_prompt, tokenize_chunks
from inference.txt2img import (
    GenerationParams,
    generate,
    generate_batch,
    initial_noise,
    sample_latents,
    txt2img,
)

FAST = dict(steps=3, width=64, height=64)
LONG_PROMPT = " ".join(["red"] * 100)  # "red" is one token of the tiny vocabulary


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def test_chunks_wrap_75_tokens_in_bos_and_eos(model):
    tok = model.tokenizer
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert len(tok(LONG_PROMPT, add_special_tokens=False)["input_ids"]) == 100
    chunks = tokenize_chunks(tok, LONG_PROMPT)
    assert [len(c) for c in chunks] == [77, 77]
    red = tok("red", add_special_tokens=False)["input_ids"][0]
    assert chunks[0] == [bos, *[red] * 75, eos]
    assert chunks[1] == [bos, *[red] * 25, *[eos] * 51]
    assert tokenize_chunks(tok, "") == [[bos, *[eos] * 76]]


def test_long_prompt_encodes_to_two_chunks(model):
    embeds = encode_prompt(model.text_encoder, model.tokenizer, LONG_PROMPT)
    assert embeds.shape == (1, 154, model.text_encoder.config.hidden_size)


def test_short_prompt_matches_the_standard_encoding(model):
    # For up to 75 tokens our chunk is exactly what a diffusers pipeline feeds CLIP (padding = EOS).
    ids = model.tokenizer("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model.text_encoder(ids).last_hidden_state
        ours = encode_prompt(model.text_encoder, model.tokenizer, "a red circle")
    assert torch.equal(ours, reference)


def test_clip_skip_two_uses_the_penultimate_layer_with_final_norm(model):
    te = model.text_encoder
    with torch.no_grad():
        skip1 = encode_prompt(te, model.tokenizer, "a red circle", clip_skip=1)
        skip2 = encode_prompt(te, model.tokenizer, "a red circle", clip_skip=2)
        ids = torch.tensor(tokenize_chunks(model.tokenizer, "a red circle"))
        expected = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-2])
    assert not torch.allclose(skip1, skip2)
    torch.testing.assert_close(skip2, expected)
    with pytest.raises(ValueError, match="clip_skip"):
        encode_prompt(te, model.tokenizer, "x", clip_skip=3)


def test_cond_and_uncond_are_padded_with_the_empty_prompt(model):
    with torch.no_grad():
        cond, uncond = encode_cond_uncond(model.text_encoder, model.tokenizer, LONG_PROMPT, "blurry")
        alone = encode_prompt(model.text_encoder, model.tokenizer, "blurry")
        empty = encode_prompt(model.text_encoder, model.tokenizer, "")
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.equal(uncond[:, :77], alone)
    assert torch.equal(uncond[:, 77:], empty)


def test_txt2img_is_deterministic_per_seed(model):
    first = txt2img(model, "a red circle", negative_prompt="blurry", seed=7, **FAST)
    again = txt2img(model, "a red circle", negative_prompt="blurry", seed=7, **FAST)
    other = txt2img(model, "a red circle", negative_prompt="blurry", seed=8, **FAST)
    assert first.size == (64, 64) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert np.asarray(first).std() > 1  # not a blank image


def diffusers_euler_latents(model, scheduler_config, params: GenerationParams) -> torch.Tensor:
    """diffusers' pipeline with its Euler scheduler (linspace timesteps) over the same model and noise."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    scheduler = EulerDiscreteScheduler.from_config(scheduler_config, timestep_spacing="linspace")
    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        params.prompt, negative_prompt=params.negative_prompt, num_inference_steps=params.steps,
        guidance_scale=params.cfg_scale, latents=initial_noise(params.seed, (1, 4, 8, 8)),
        output_type="latent", height=params.height, width=params.width,
    ).images  # fmt: skip


def test_latents_match_diffusers_euler_with_linspace_timesteps(model):
    # An independent implementation of the same sampler: with 10 steps every timestep is an integer
    # (999/9 = 111), where diffusers' Euler and k-diffusion's agree; the noise starts at sigma_max in both.
    params = GenerationParams("a red circle", "blurry", seed=5, steps=10, cfg_scale=6.0, width=64, height=64)
    reference = diffusers_euler_latents(model, model.noise_scheduler.config, params)
    with torch.no_grad():
        ours = sample_latents(model, [params])
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-3)


def test_v_prediction_matches_diffusers_euler(model):
    """An SD 2.x-style v-prediction model (the same UNet read as predicting v) against diffusers' Euler."""
    config = {**model.noise_scheduler.config, "prediction_type": "v_prediction"}
    v_model = dataclasses.replace(model, noise_scheduler=DDPMScheduler.from_config(config))
    params = GenerationParams("a red circle", "", seed=2, steps=10, cfg_scale=5.0, width=64, height=64)
    reference = diffusers_euler_latents(model, config, params)
    with torch.no_grad():
        ours, eps_read = sample_latents(v_model, [params]), sample_latents(model, [params])
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-3)
    assert (ours - eps_read).abs().max() > 0.1  # the prediction type is really used


def test_a_batch_renders_each_image_as_alone(model):
    """Own seed's noise, own prompt and negative prompt: batching changes pixels by float rounding at most."""
    batch = [
        GenerationParams("a red circle", "", seed=3, **FAST),
        GenerationParams("a blue square", "blurry", seed=4, **FAST),
        GenerationParams("a red circle", "", seed=5, **FAST),
    ]
    together = generate_batch(model, batch)
    for params, image in zip(batch, together, strict=True):
        alone = np.asarray(generate(model, params), dtype=int)
        assert np.abs(np.asarray(image, dtype=int) - alone).max() <= 1
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[2]))
    # A longer prompt pads the others with empty chunks, as A1111 pads a batch; its own image is unchanged.
    mixed = generate_batch(model, [batch[0], GenerationParams(LONG_PROMPT, seed=1, **FAST)])
    alone = np.asarray(generate(model, GenerationParams(LONG_PROMPT, seed=1, **FAST)), dtype=int)
    assert np.abs(np.asarray(mixed[1], dtype=int) - alone).max() <= 1
    with pytest.raises(ValueError, match="must share steps"):
        generate_batch(model, [batch[0], GenerationParams("x", steps=4, width=64, height=64)])


def test_txt2img_prompt_and_size_matter(model):
    base = np.asarray(txt2img(model, "a red circle", seed=1, **FAST))
    assert not np.array_equal(base, np.asarray(txt2img(model, "a blue square", seed=1, **FAST)))
    assert txt2img(model, LONG_PROMPT, seed=1, steps=2, width=48, height=32).size == (48, 32)
    with pytest.raises(ValueError, match="multiples of 8"):
        txt2img(model, "x", width=60, height=64)


def test_infotext_layout_matches_a1111():
    params = GenerationParams(
        "a cat, sitting", "blurry", seed=1, cfg_scale=7.0, clip_skip=2, model_name="toy"
    )
    text = format_infotext(params, {"Lora hashes": "style: 0123456789ab", "Model hash": "abcdef1234"})
    assert text == (
        "a cat, sitting\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, "
        'Model hash: abcdef1234, Model: toy, Clip skip: 2, RNG: CPU, Lora hashes: "style: 0123456789ab"'
    )
    plain = format_infotext(GenerationParams("a dog", cfg_scale=7.5, width=64, height=96, model_name=None))
    assert plain == (
        "a dog\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: 0, Size: 64x96, RNG: CPU"
    )


def test_infotext_round_trip():
    params = GenerationParams(
        "line one, (tag)\nline two: more", "bad, worse", seed=123456789, steps=28, cfg_scale=4.5,
        width=640, height=384, clip_skip=2, model_name="my model",
    )  # fmt: skip
    info = parse_infotext(format_infotext(params, {"Lora hashes": "a: 1, b: 2"}))
    assert info["Prompt"] == params.prompt
    assert info["Negative prompt"] == "bad, worse"
    assert (info["Size-1"], info["Size-2"], info["Lora hashes"]) == ("640", "384", "a: 1, b: 2")
    assert params_from_infotext(info) == params
    defaults = parse_infotext("just a prompt\nSteps: 20, Sampler: Euler, Seed: 5, Size: 8x8")
    assert (defaults["Clip skip"], defaults["RNG"], defaults["Negative prompt"]) == ("1", "GPU", "")
    assert parse_infotext("no parameters here")["Prompt"] == "no parameters here"


def test_save_png_writes_readable_parameters_chunk(tmp_path):
    image = Image.new("RGB", (16, 16), "red")
    text = format_infotext(GenerationParams("café, 猫", width=16, height=16))
    path = save_png(image, tmp_path / "sub" / "out.png", text)
    assert Image.open(path).text["parameters"] == text
    assert read_infotext(path) == text
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]  # no temp file left behind
    save_png(Image.new("RGB", (16, 16), "blue"), path, "second")
    assert read_infotext(path) == "second"


def test_grid_layout_labels_and_background():
    cells = [[Image.new("RGB", (64, 64), (255, 0, 0)) for _ in range(3)] for _ in range(2)]
    grid = make_grid(
        cells,
        ["a red circle", "a much longer prompt that has to wrap over lines"],
        ["lora 0", "lora 0.5", "lora 1"],
    )
    pixels = np.asarray(grid)
    left, top = grid.width - 3 * 64, grid.height - 2 * 64
    assert left > 0 and top > 0
    assert tuple(pixels[top + 10, left + 10]) == (255, 0, 0)
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert (pixels[:top, left:] < 128).any()  # column labels were drawn
    assert (pixels[top:, :left] < 128).any()  # row labels were drawn
    bare = make_grid(cells, [], [])
    assert bare.size == (192, 128)
    with pytest.raises(ValueError, match="row labels"):
        make_grid(cells, ["only one"], [])
