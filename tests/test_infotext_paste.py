"""`parse_generation_parameters`: infotexts read into the dict A1111's paste button fills its fields from."""

from __future__ import annotations

from inference.infotext import format_infotext, parse_generation_parameters
from inference.txt2img import GenerationParams

A1111_TEXT = """masterpiece, (red hair:1.2), [cat:dog:0.5] <lora:style:0.8>
Negative prompt: lowres, bad hands
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Clip skip: 2, \
Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Lora hashes: "style: 0a1b2c3d4e5f", Version: v1.10.1"""


def test_a1111_infotext_reads_as_a1111_reads_it():
    info = parse_generation_parameters(A1111_TEXT)
    assert info["Prompt"] == "masterpiece, (red hair:1.2), [cat:dog:0.5] <lora:style:0.8>"
    assert info["Negative prompt"] == "lowres, bad hands"
    assert (info["Size-1"], info["Size-2"]) == ("512", "768") and "Size" not in info
    assert info["Steps"] == "28" and info["CFG scale"] == "6.5" and info["Clip skip"] == "2"
    assert info["Lora hashes"] == "style: 0a1b2c3d4e5f"  # unquoted
    # Keys the text leaves out get A1111's defaults.
    assert info["RNG"] == "GPU" and info["Hires sampler"] == "Use same sampler" and info["Hires prompt"] == ""
    assert (
        info["Hires resize-1"] == 0 and info["Masked area padding"] == 32 and info["FP8 weight"] == "Disable"
    )
    assert "Old prompt editing timelines" not in info and "Downcast alphas_cumprod" not in info
    assert list(info)[:3] == ["Prompt", "Negative prompt", "Steps"]


def test_old_infotexts_get_a1111s_compatibility_switches():
    old = (
        "a [cat:dog:5] photo\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 1024x768, "
        "First pass size: 0x0, Hypernet: anime, Version: v1.5.1"
    )
    info = parse_generation_parameters(old)
    # First pass 0x0: A1111 scaled the picture to about 512 x 512 in steps of 64 for the first pass.
    assert (info["Size-1"], info["Size-2"]) == (640, 448)  # sqrt(512²/(1024·768)) · (1024, 768), up to 64s
    assert (info["Hires resize-1"], info["Hires resize-2"]) == (1024, 768)
    assert info["Prompt"].endswith("<hypernet:anime:1.0>")
    assert info["Old prompt editing timelines"] and info["Pad conds v0"] and info["Downcast alphas_cumprod"]
    after_tsnr = parse_generation_parameters(old.replace("v1.5.1", "v1.7.0-225-g1a2b3c4"))
    assert "Downcast alphas_cumprod" not in after_tsnr and "Pad conds v0" not in after_tsnr
    assert parse_generation_parameters(old.replace("v1.5.1", "f2.0.1v1.10.1-previous-1-g2"))["Prompt"]


def test_our_infotext_reads_back_as_a1111_would():
    params = GenerationParams("a red circle, (blue:1.1)", "blurry", seed=7, steps=12, sampler="Euler a",
                              width=64, height=96, rng="CPU")  # fmt: skip
    info = parse_generation_parameters(format_infotext(params, {"Lora hashes": "x: 0123456789ab"}))
    assert info["Prompt"] == params.prompt and info["Negative prompt"] == "blurry"
    assert (info["Seed"], info["Steps"], info["Sampler"]) == ("7", "12", "Euler a")
    assert (info["Size-1"], info["Size-2"], info["RNG"]) == ("64", "96", "CPU")
    assert info["Lora hashes"] == "x: 0123456789ab"
    assert "Emphasis" not in info  # A1111 adds nothing for a key its writer left out


def test_a_text_without_a_parameter_line_is_all_prompt():
    info = parse_generation_parameters("just a prompt\nsecond line")
    assert info["Prompt"] == "just a prompt\nsecond line" and info["Negative prompt"] == ""
    assert info["Clip skip"] == "1" and info["Schedule type"] == "Automatic"
