"""SDXL in the engine: A1111's prompt encoding with both encoders, and txt2img against diffusers' pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import save_file

from data.typed_config import ConfigError
from inference.controlnet_render import load_units
from inference.controlnet_units import ControlNetUnit
from inference.hires import HiresParams, generate_hires_batch
from inference.img2img import img2img
from inference.infotext import parse_infotext, read_infotext
from inference.models.tiny_sdxl import build_tiny_sdxl
from inference.scheduled_conds import PromptTimeline
from inference.sdxl_conds import SdxlCond, cat_conds
from inference.sdxl_text import encode_model_conds, encode_sdxl_texts, sdxl_time_ids
from inference.text_encoding import TextOptions
from inference.txt2img import GenerationParams, initial_noise, sample_latents

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    bundle = build_tiny_sdxl(seed=0)
    bundle.freeze()
    return bundle


@pytest.fixture(scope="module")
def pipe(model):
    # With 4 steps every "linspace" timestep (0, 333, 666, 999) is an integer, where diffusers' Euler and
    # ours agree.
    scheduler = EulerDiscreteScheduler.from_config(model.noise_scheduler.config, timestep_spacing="linspace")
    pipeline = StableDiffusionXLPipeline(
        vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet, scheduler=scheduler,
        add_watermarker=False,
    )  # fmt: skip
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _conds(model, params: GenerationParams):
    """Our (cond, uncond) SdxlConds for one image at step 0."""
    cond, uncond, _ = encode_model_conds(
        model, [params.prompt], [params.negative_prompt], PromptTimeline(params.steps),
        TextOptions(), (params.width, params.height),
    )  # fmt: skip
    return cond.at(0), uncond.at(0)


def test_one_chunk_prompt_encodes_as_diffusers_encode_prompt(model, pipe):
    ours = encode_sdxl_texts(model, ["a red circle"], TextOptions())["a red circle"]
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            "a red circle", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    assert ours[0].shape == embeds.shape == (1, 77, 64)
    assert torch.allclose(ours[0], embeds, atol=1e-6)
    assert torch.allclose(ours[1], pooled, atol=1e-6)


def test_empty_negative_prompt_is_zero_text_conditioning(model, pipe):
    # A1111 and diffusers (negative_prompt=None, force_zeros_for_empty_prompt) both zero it; diffusers
    # encodes an explicit "" instead, A1111 zeroes that too.
    params = GenerationParams("a red circle", "", steps=4, width=64, height=48)
    _, uncond = _conds(model, params)
    assert not uncond.crossattn.any() and not uncond.text_embeds.any()
    assert uncond.time_ids.tolist() == [[48.0, 64.0, 0.0, 0.0, 48.0, 64.0]]
    with torch.no_grad():
        _, negative, _, negative_pooled = pipe.encode_prompt(
            "a red circle", device="cpu", negative_prompt=None
        )
    assert not negative.any() and not negative_pooled.any()


def test_long_prompt_pads_zero_negative_with_the_empty_prompt(model):
    long = ", ".join(["a red circle"] * 30)  # over 75 tokens: two chunks
    cond, uncond = _conds(model, GenerationParams(long, "", steps=4, width=64, height=64))
    empty = encode_sdxl_texts(model, [""], TextOptions())[""][0]
    assert cond.crossattn.shape == uncond.crossattn.shape == (1, 154, 64)
    assert not uncond.crossattn[:, :77].any()
    assert torch.equal(uncond.crossattn[:, 77:], empty)


def test_break_starts_a_chunk_and_the_pooled_output_is_the_first_chunks(model):
    encoded = encode_sdxl_texts(model, ["a red circle BREAK a blue square", "a red circle"], TextOptions())
    (joined, pooled), (alone, alone_pooled) = (
        encoded["a red circle BREAK a blue square"],
        encoded["a red circle"],
    )
    assert joined.shape == (1, 154, 64)
    assert torch.allclose(joined[:, :77], alone[:, :77], atol=1e-6)  # alone was padded to two chunks
    assert torch.allclose(pooled, alone_pooled, atol=1e-6)


def test_emphasis_scales_both_encoders_but_not_the_pooled_output(model):
    plain = encode_sdxl_texts(model, ["a red circle"], TextOptions())["a red circle"]
    weighted = encode_sdxl_texts(model, ["a (red:1.5) circle"], TextOptions())["a (red:1.5) circle"]
    assert torch.equal(plain[1], weighted[1])
    changed = (plain[0] - weighted[0]).abs().amax(dim=1)[0]  # (64,) per channel
    assert changed[:32].max() > 1e-4 and changed[32:].max() > 1e-4


def test_sdxl_euler_matches_diffusers_pipeline(model, pipe):
    params = GenerationParams("a red circle", "blurry", 5, 4, 6.0, 64, 64, sampler="Euler")
    cond, uncond = _conds(model, params)
    with torch.no_grad():
        reference = pipe(
            prompt_embeds=cond.crossattn, pooled_prompt_embeds=cond.text_embeds,
            negative_prompt_embeds=uncond.crossattn, negative_pooled_prompt_embeds=uncond.text_embeds,
            num_inference_steps=params.steps, guidance_scale=params.cfg_scale, height=64, width=64,
            latents=initial_noise(params.seed, (1, 4, 8, 8)), output_type="latent",
        ).images  # fmt: skip
        ours = sample_latents(model, [params])
    assert (ours - reference).abs().max() <= 1e-4
    assert reference.abs().max() > 0.1


def test_time_ids_follow_the_render_size_and_change_the_image(model):
    assert sdxl_time_ids(64, 32, rows=2).tolist() == [[32.0, 64.0, 0.0, 0.0, 32.0, 64.0]] * 2
    params = GenerationParams("a red circle", steps=2, width=64, height=64)
    cond, uncond = _conds(model, params)
    moved = SdxlCond(cond.crossattn, cond.text_embeds, sdxl_time_ids(128, 128, rows=1))
    both = cat_conds([uncond, cond])
    assert both.shape == (2, 77, 64) and torch.equal(both[1].time_ids, cond.time_ids)
    with torch.no_grad():
        x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
        a = model.unet(
            x,
            t,
            cond.crossattn,
            added_cond_kwargs={"text_embeds": cond.text_embeds, "time_ids": cond.time_ids},
        )
        b = model.unet(
            x,
            t,
            moved.crossattn,
            added_cond_kwargs={"text_embeds": moved.text_embeds, "time_ids": moved.time_ids},
        )
    assert (a.sample - b.sample).abs().max() > 1e-4


def test_prompt_editing_and_and_render_on_sdxl(model):
    base = GenerationParams("a red circle", "blurry", 3, 4, 6.0, 64, 64)
    edited = GenerationParams("a [red:blue:2] circle", "blurry", 3, 4, 6.0, 64, 64)
    composed = GenerationParams("a red circle AND a blue square :0.5", "blurry", 3, 4, 6.0, 64, 64)
    with torch.no_grad():
        plain, edit, both = (sample_latents(model, [p]) for p in (base, edited, composed))
        batch = sample_latents(model, [base, composed])
    assert (plain - edit).abs().max() > 1e-4 and (plain - both).abs().max() > 1e-4
    assert torch.allclose(batch, torch.cat([plain, both]), atol=1e-4)


def _time_ids_seen(model):
    """Record the time ids of every UNet call: a list filled while the returned hook handle lives."""
    seen: list[list[float]] = []

    def record(_module, _args, kwargs):
        seen.append(kwargs["added_cond_kwargs"]["time_ids"][0].tolist())

    return seen, model.unet.register_forward_pre_hook(record, with_kwargs=True)


def test_img2img_and_the_hires_fix_condition_on_their_own_size(model):
    params = GenerationParams("a red circle", "blurry", 3, 2, 6.0, 64, 48)
    seen, handle = _time_ids_seen(model)
    try:
        image = img2img(model, params, Image.new("RGB", (32, 32), (200, 30, 30)), 0.6)[0]
        img2img_seen, seen[:] = list(seen), []
        hires = generate_hires_batch(model, [params], HiresParams(scale=2, denoising_strength=0.6))[0]
    finally:
        handle.remove()
    assert image.size == (64, 48) and hires.size == (128, 96)
    assert {tuple(ids) for ids in img2img_seen} == {(48, 64, 0, 0, 48, 64)}
    # A1111 conditions the hires pass on its upscale size (hr_upscale_to_x/y), the first pass on its own.
    assert {tuple(ids) for ids in seen} == {(48, 64, 0, 0, 48, 64), (96, 128, 0, 0, 96, 128)}
    assert seen[-1] == [96, 128, 0, 0, 96, 128]


def test_command_line_renders_tiny_sdxl_with_a1111_infotext(tmp_path):
    """`python -m inference model=tiny_sdxl ...`, through Hydra's config and the entry point's run."""
    from hydra import compose, initialize_config_dir

    from inference.__main__ import run

    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    save_file({"clip_l": torch.ones(2, 32), "clip_g": torch.ones(2, 32)}, embeddings / "shiny.safetensors")
    overrides = ["model=tiny_sdxl", "steps=2", "width=64", "height=48", "seed=7", "clip_skip=2"]
    with initialize_config_dir(str(REPO / "configs" / "inference"), version_base="1.3"):
        cfg = compose(
            "txt2img",
            overrides=[
                *overrides,
                "prompt=a shiny circle",
                f"out={tmp_path}",
                f"embeddings_dir={embeddings}",
            ],
        )
    run(cfg)
    image = next(tmp_path.glob("*.png"))
    info = parse_infotext(read_infotext(image))
    assert Image.open(image).size == (64, 48)
    # A1111 writes clip skip for SDXL too, though its default settings do not apply it there.
    assert (info["Model"], info["Size"], info["Seed"], info["Clip skip"]) == ("tiny_sdxl", "64x48", "7", "2")
    assert info["TI hashes"].startswith("shiny: ")


def test_clip_skip_leaves_sdxl_conditioning_alone(model):
    # A1111 v1.10.1 reads both encoders' penultimate layers whatever clip skip says (sdxl_clip_l_skip off).
    skip_1 = encode_sdxl_texts(model, ["a red circle"], TextOptions(clip_skip=1))["a red circle"]
    skip_2 = encode_sdxl_texts(model, ["a red circle"], TextOptions(clip_skip=2))["a red circle"]
    assert torch.equal(skip_1[0], skip_2[0]) and torch.equal(skip_1[1], skip_2[1])


def test_empty_negative_prompt_render_equals_the_pipeline_encoding_its_own_prompt(model, pipe):
    # Where A1111 and diffusers agree on encoding (one chunk, no emphasis, negative prompt None in
    # diffusers = "" in A1111: zeros), the pipeline may encode the prompt itself.
    params = GenerationParams("a red circle", "", 5, 4, 6.0, 64, 64, sampler="Euler")
    with torch.no_grad():
        reference = pipe(
            params.prompt, negative_prompt=None, num_inference_steps=params.steps,
            guidance_scale=params.cfg_scale, height=64, width=64,
            latents=initial_noise(params.seed, (1, 4, 8, 8)), output_type="latent",
        ).images  # fmt: skip
        ours = sample_latents(model, [params])
    assert (ours - reference).abs().max() <= 1e-4


def test_controlnet_units_on_sdxl_are_one_clear_error(model):
    with pytest.raises(ConfigError, match="SDXL is not supported"):
        load_units(model, [ControlNetUnit(model="control.safetensors", image="map.png")], 64, 64)
