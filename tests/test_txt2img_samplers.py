"""txt2img with every A1111 sampler, schedule type, RNG source and text option, on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.denoisers import CFGDenoiser, EpsDenoiser
from inference.embeddings import Embedding, EmbeddingDatabase
from inference.infotext import format_infotext, params_from_infotext, parse_infotext
from inference.models.tiny import build_tiny
from inference.noise_sources import seeded_generator
from inference.rng import PhiloxGenerator
from inference.sampler_names import SAMPLER_SPECS
from inference.samplers import get_sigmas_normal, sample_euler
from inference.text_encoding import encode_batch_conds
from inference.txt2img import GenerationParams, generate, initial_noise, prepare_sampling, sample_latents

FAST = dict(steps=3, width=64, height=64)


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def latents(model, *batch: GenerationParams, embeddings=None) -> torch.Tensor:
    with torch.no_grad():
        return sample_latents(model, list(batch), embeddings)


def old_euler_latents(model, batch: list[GenerationParams]) -> torch.Tensor:
    """txt2img's sampling before samplers were selectable: CPU noise * sigma_max, Euler on Normal sigmas."""
    first, unet = batch[0], model.unet
    with torch.no_grad():
        cond, uncond = encode_batch_conds(
            model.text_encoder,
            model.tokenizer,
            [p.prompt for p in batch],
            [p.negative_prompt for p in batch],
            first.clip_skip,
        )
        denoiser = EpsDenoiser(unet, model.noise_scheduler.alphas_cumprod.to(unet.device))
        sigmas = get_sigmas_normal(denoiser.sigmas, first.steps)
        shape = (1, unet.config.in_channels, first.height // 8, first.width // 8)
        x = torch.cat([initial_noise(p.seed, shape) for p in batch]).to(unet.device) * sigmas[0]
        guided = CFGDenoiser(denoiser, cond.to(unet.device), uncond.to(unet.device), first.cfg_scale)
        return sample_euler(guided, x, sigmas)


@pytest.mark.parametrize("sampler", [spec.name for spec in SAMPLER_SPECS])
def test_every_sampler_renders_deterministically(model, sampler):
    params = GenerationParams("a red circle", "blurry", seed=11, sampler=sampler, **FAST)
    first = latents(model, params)
    assert first.shape == (1, 4, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, latents(model, params))
    image = np.asarray(generate(model, params))
    assert image.shape == (64, 64, 3) and image.std() > 1
    assert np.array_equal(image, np.asarray(generate(model, params)))


def test_the_sampler_and_schedule_chosen_are_the_ones_run(model):
    base = dict(prompt="a red circle", seed=2, **FAST)
    euler = latents(model, GenerationParams(**base))
    assert torch.equal(latents(model, GenerationParams(sampler="k_euler_a", **base)), latents(
        model, GenerationParams(sampler="Euler a", **base)
    ))  # fmt: skip
    for other in ("Euler a", "DDIM", "LCM", "DPM++ 2M"):
        assert not torch.equal(euler, latents(model, GenerationParams(sampler=other, **base))), other
    karras = latents(model, GenerationParams(scheduler="Karras", **base))
    assert not torch.equal(euler, karras)
    # DPM++ 2M's "Automatic" is Karras, and the old combined name means the same.
    automatic = latents(model, GenerationParams(sampler="DPM++ 2M", **base))
    assert torch.equal(
        automatic, latents(model, GenerationParams(sampler="DPM++ 2M", scheduler="Karras", **base))
    )
    assert torch.equal(automatic, latents(model, GenerationParams(sampler="DPM++ 2M Karras", **base)))


def test_euler_is_bit_identical_to_the_old_path(model):
    batch = [
        GenerationParams("a red circle", "blurry", seed=5, cfg_scale=6.0, **FAST),
        GenerationParams("a blue square", "", seed=6, cfg_scale=6.0, **FAST),
    ]
    assert torch.equal(latents(model, *batch), old_euler_latents(model, batch))
    alone = GenerationParams("a red circle", seed=7, sampler="euler", steps=10, width=64, height=64)
    assert torch.equal(latents(model, alone), old_euler_latents(model, [alone]))


# DPM adaptive sizes its steps by an error norm over the whole batch: in A1111 too, an image depends on its batch.
@pytest.mark.parametrize("sampler", [spec.name for spec in SAMPLER_SPECS if spec.name != "DPM adaptive"])
def test_a_batch_samples_each_image_as_alone(model, sampler):
    """Every sampler: image i of a batch of 4 is image i alone. Ancestral and SDE noise come from each
    image's own seed, whatever else shares the batch (equal up to the rounding of batched matmuls)."""
    batch = [
        GenerationParams("a red circle", "", seed=3, sampler=sampler, **FAST),
        GenerationParams("a blue square", "blurry", seed=4, sampler=sampler, rng="NV", **FAST),
        GenerationParams("a red circle", "", seed=5, sampler=sampler, **FAST),
        GenerationParams("a green star", "", seed=6, sampler=sampler, rng="GPU", **FAST),
    ]
    together = latents(model, *batch)
    for index, params in enumerate(batch):
        torch.testing.assert_close(together[index : index + 1], latents(model, params), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(together[0], together[2])
    # exact_batch: one UNet call per image, so image i is the lone image bit for bit.
    exact = [dataclasses.replace(params, exact_batch=True) for params in batch]
    together = latents(model, *exact)
    for index, params in enumerate(exact):
        assert torch.equal(together[index : index + 1], latents(model, params))


def test_ddim_cfgpp_guides_at_a_twelve_and_a_half_th_of_the_cfg_scale(model):
    """A1111 divides the CFG scale by 12.5 for DDIM CFG++ only (its cond_scale multiplier)."""
    base = dict(prompt="a red circle", seed=2, cfg_scale=10.0, **FAST)
    with torch.no_grad():
        cfgpp = prepare_sampling(model, [GenerationParams(sampler="DDIM CFG++", **base)])
        ddim = prepare_sampling(model, [GenerationParams(sampler="DDIM", **base)])
    assert cfgpp.denoise.scale == 10.0 / 12.5 and ddim.denoise.scale == 10.0
    assert not torch.equal(
        latents(model, GenerationParams(sampler="DDIM CFG++", **base)),
        latents(model, GenerationParams(sampler="DDIM", **base)),
    )


def test_nv_rng_is_deterministic_and_differs_from_cpu(model):
    cpu = GenerationParams("a red circle", seed=9, sampler="Euler a", **FAST)
    nv = GenerationParams("a red circle", seed=9, sampler="Euler a", rng="NV", **FAST)
    assert torch.equal(latents(model, nv), latents(model, nv))
    assert not torch.allclose(latents(model, nv), latents(model, cpu))
    assert isinstance(seeded_generator(9, "NV", "cpu"), PhiloxGenerator)
    assert torch.equal(seeded_generator(9, "nv", "cpu").randn((4, 8, 8)), PhiloxGenerator(9).randn((4, 8, 8)))
    # On a CPU-only machine the "GPU" source draws from a CPU generator: the same as "CPU".
    if model.unet.device.type == "cpu":
        assert torch.equal(latents(model, GenerationParams("a red circle", seed=9, rng="GPU", **FAST)), latents(
            model, GenerationParams("a red circle", seed=9, **FAST)
        ))  # fmt: skip


def test_ddim_twenty_steps_makes_nineteen_unet_calls(model):
    calls = []
    handle = model.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        generate(model, GenerationParams("a red circle", sampler="DDIM", steps=20, width=64, height=64))
    finally:
        handle.remove()
    assert calls == [2] * 19  # cond and uncond in one call, A1111's timesteps 1, 51, ..., 951


def test_text_options_reach_the_text_encoder(model):
    base = dict(seed=1, **FAST)
    plain = latents(model, GenerationParams("red circle", **base))
    weighted = GenerationParams("(red:1.5) circle", **base)
    assert not torch.equal(latents(model, weighted), plain)
    ignored = GenerationParams("(red:1.5) circle", emphasis="Ignore", **base)
    assert torch.equal(latents(model, ignored), plain)
    database = EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
    database.add(Embedding("red", torch.randn(2, model.text_encoder.config.hidden_size)))
    assert not torch.equal(latents(model, GenerationParams("red circle", **base), embeddings=database), plain)
    with pytest.raises(ValueError, match="must share emphasis"):
        latents(model, weighted, ignored)


def test_names_resolve_on_construction_and_bad_values_are_refused():
    params = GenerationParams("x", sampler="k_dpmpp_2m", scheduler="karras", rng="nv")
    assert (params.sampler, params.scheduler, params.rng) == ("DPM++ 2M", "Karras", "NV")
    assert GenerationParams("x", sampler="euler").sampler == "Euler"
    assert (GenerationParams("x", sampler="Euler a Exponential").scheduler) == "Exponential"
    with pytest.warns(UserWarning, match="unknown sampler 'Euler Z'"):
        assert GenerationParams("x", sampler="Euler Z").sampler == "DPM++ 2M"
    with pytest.raises(ValueError, match="RNG source 'TPU'"):
        GenerationParams("x", rng="TPU").validate()
    with pytest.raises(ValueError, match="emphasis mode 'Loud'"):
        GenerationParams("x", emphasis="Loud").validate()


def round_trip(params: GenerationParams) -> tuple[str, GenerationParams]:
    text = format_infotext(params)
    return text.splitlines()[-1], params_from_infotext(parse_infotext(text))


def test_infotext_records_sampler_schedule_rng_and_emphasis():
    base = dict(prompt="a (red) circle", seed=1, width=64, height=64)
    # "Automatic" is written as the schedule it stands for, and pasted back as Automatic (as A1111 does).
    params = GenerationParams(sampler="dpmpp_2m", rng="NV", emphasis="No norm", **base)
    line, back = round_trip(params)
    assert line == (
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 64x64, RNG: NV, "
        "Emphasis: No norm"
    )
    assert back == params
    for sampler, scheduler, written in [
        ("Euler", "Automatic", "Automatic"),  # no default of its own: Automatic stays
        ("Euler a", "Karras", "Karras"),
        ("DPM++ 2M SDE", "Automatic", "Exponential"),
        ("DDIM", "Karras", "Karras"),  # ignored by DDIM, recorded as chosen
        ("LCM", "Automatic", "Automatic"),
    ]:
        params = GenerationParams(sampler=sampler, scheduler=scheduler, **base)
        line, back = round_trip(params)
        assert f"Sampler: {sampler}, Schedule type: {written}," in line
        assert back == params
    # The sampler's own default, chosen by name, comes back as Automatic: the same sigmas.
    _, back = round_trip(GenerationParams(sampler="DPM++ 2M", scheduler="Karras", **base))
    assert (back.scheduler, back.resolve()[1]) == ("Automatic", "Karras")


def test_infotext_rng_and_emphasis_defaults():
    gpu = GenerationParams("a circle", rng="GPU", emphasis="No norm")
    line, back = round_trip(gpu)
    assert "RNG" not in line and "Emphasis" not in line  # A1111's default source; no bracket to weigh
    assert (back.rng, back.emphasis) == ("GPU", "Original")
    assert "Emphasis: Ignore" in format_infotext(GenerationParams("a circle", "[blurry]", emphasis="Ignore"))
    assert "Emphasis" not in format_infotext(GenerationParams("a (circle)"))
    parsed = parse_infotext("a (circle)\nSteps: 20, Sampler: Euler, Seed: 5, Size: 8x8")
    assert parsed["Emphasis"] == "Original" and parsed["RNG"] == "GPU"
    assert "Emphasis" not in parse_infotext("a circle\nSteps: 20, Sampler: Euler, Seed: 5, Size: 8x8")


def test_infotext_reads_old_combined_sampler_names():
    def pasted(sampler: str) -> tuple[str, str]:
        info = parse_infotext(f"a cat\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 64x64")
        back = params_from_infotext(info)
        return back.sampler, back.scheduler

    assert pasted("DPM++ 2M Karras") == ("DPM++ 2M", "Automatic")
    assert pasted("DPM++ 2M SDE Exponential") == ("DPM++ 2M SDE", "Automatic")
    assert pasted("Euler a Karras") == ("Euler a", "Karras")
    assert pasted("k_euler_a") == ("Euler a", "Automatic")
    assert pasted("DPM++ SDE") == ("DPM++ SDE", "Automatic")
