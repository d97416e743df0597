"""ControlNet units on the tiny model: parity with diffusers' pipeline, and weight, guidance window and
control modes as A1111's ControlNet extension applies them (scripts/hook.py)."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline

from inference.controlnet import (
    ActiveUnit,
    ControlledUNet,
    control_scales,
    guidance_active,
    sample_controlled_latents,
)
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams, initial_noise, sample_latents
from tests.controlnet_fixtures import tiny_controlnet


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def controlnet(model):
    return tiny_controlnet(model.unet)


@pytest.fixture(scope="module")
def hint():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _params(steps: int = 10, sampler: str = "Euler") -> GenerationParams:
    return GenerationParams("a red circle", "blurry", 5, steps, 6.0, 64, 64, sampler=sampler)


def test_one_unit_at_weight_one_matches_diffusers_controlnet_pipeline(model, controlnet, hint):
    # With 10 steps every Euler timestep is an integer, where diffusers' Euler and ours agree.
    params = _params()
    scheduler = EulerDiscreteScheduler.from_config(model.noise_scheduler.config, timestep_spacing="linspace")
    pipe = StableDiffusionControlNetPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        controlnet=controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        params.prompt, image=hint, negative_prompt=params.negative_prompt, num_inference_steps=params.steps,
        guidance_scale=params.cfg_scale, latents=initial_noise(params.seed, (1, 4, 8, 8)), output_type="latent",
        height=64, width=64,
    ).images  # fmt: skip
    with torch.no_grad():
        ours, _ = sample_controlled_latents(model, [params], [ActiveUnit(controlnet, hint)])
        plain = sample_latents(model, [params])
    assert (ours - reference).abs().max() <= 1e-4
    assert (ours - plain).abs().max() > 0.1  # the unit really acts


def test_weight_zero_or_an_empty_window_renders_the_plain_image(model, controlnet, hint):
    params = _params(steps=4)
    with torch.no_grad():
        plain = sample_latents(model, [params])
        zero, _ = sample_controlled_latents(model, [params], [ActiveUnit(controlnet, hint, weight=0.0)])
        half, _ = sample_controlled_latents(model, [params], [ActiveUnit(controlnet, hint, weight=0.5)])
        # state.sampling_step / steps never reaches 1 (the last step reads steps - 2): the unit never acts.
        late = ActiveUnit(controlnet, hint, guidance_start=1.0, guidance_end=1.0)
        never, controlled = sample_controlled_latents(model, [params], [late])
    assert torch.equal(zero, plain) and torch.equal(never, plain)
    assert controlled.calls == [0, 0, 0, 0]
    assert (half - plain).abs().max() > 1e-3


def test_soft_injection_scales_are_the_extensions():
    # hook.py: control_scales = [weight * (0.825 ** float(12 - i)) for i in range(13)] when the control mode
    # is not Balanced (soft_injection = control_mode != BALANCED); Balanced keeps [weight] * 13.
    for mode in ("My prompt is more important", "ControlNet is more important"):
        assert control_scales(0.7, mode) == [0.7 * (0.825 ** float(12 - i)) for i in range(13)]
    assert control_scales(0.7, "Balanced") == [0.7] * 13
    assert control_scales(1.0, "My prompt is more important", 5)[-1] == 1.0  # the middle block keeps it
    with pytest.raises(ValueError, match="control_mode"):
        control_scales(1.0, "Guess")


def _extension_active_steps(steps: int, start: float, end: float) -> list[bool]:
    """Per sampler step, whether the extension's unit runs: A1111 sets state.sampling_step = 0 when sampling
    starts and to d['i'] in the sampler callback after step i; hook.py stops a unit when
    sampling_step / sampling_steps < start or > end."""
    active, sampling_step = [], 0
    for i in range(steps):
        percent = sampling_step / steps
        active.append(not (percent < start or percent > end))
        sampling_step = i  # the callback after step i
    return active


@pytest.mark.parametrize("start,end", [(0.0, 1.0), (0.3, 0.6), (0.5, 1.0), (0.0, 0.2)])
def test_guidance_window_runs_the_unit_at_the_extensions_steps(model, controlnet, hint, start, end):
    unit = ActiveUnit(controlnet, hint, guidance_start=start, guidance_end=end)
    with torch.no_grad():
        _, controlled = sample_controlled_latents(model, [_params(steps=10)], [unit])
    assert [bool(ran) for ran in controlled.calls] == _extension_active_steps(10, start, end)
    assert [guidance_active(max(i - 1, 0), 10, start, end) for i in range(10)] == _extension_active_steps(
        10, start, end
    )


def test_second_order_samplers_read_the_window_per_step_not_per_call(model, controlnet, hint):
    unit = ActiveUnit(controlnet, hint, guidance_start=0.5)
    with torch.no_grad():
        _, controlled = sample_controlled_latents(model, [_params(steps=4, sampler="Heun")], [unit])
    # Heun: two calls a step, one in the last; the window opens at state.sampling_step 2 of 4 (step 3).
    assert controlled.calls == [0, 0, 0, 0, 0, 0, 1]


def _inputs(model):
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 77, 32, generator=generator)
    return x, torch.tensor([500, 500]), context


def test_modes_scale_the_raw_residuals_and_controlnet_mode_spares_the_negative_half(model, controlnet, hint):
    x, t, context = _inputs(model)
    with torch.no_grad():
        down, mid = controlnet(x, t, context, controlnet_cond=hint.expand(2, -1, -1, -1), return_dict=False)
        raw = [*down, mid]
        plain = model.unet(x, t, encoder_hidden_states=context).sample
        for mode in ("Balanced", "My prompt is more important", "ControlNet is more important"):
            scales = control_scales(0.8, mode, len(raw))
            mark = torch.tensor([0.0 if mode == "ControlNet is more important" else 1.0, 1.0])
            scaled = [r * s * mark.reshape(-1, 1, 1, 1) for r, s in zip(raw, scales, strict=True)]
            expected = model.unet(
                x, t, encoder_hidden_states=context, down_block_additional_residuals=scaled[:-1],
                mid_block_additional_residual=scaled[-1],
            ).sample  # fmt: skip
            unit = ActiveUnit(controlnet, hint, weight=0.8, control_mode=mode)
            out = ControlledUNet(model.unet, [unit], 10)(x, t, encoder_hidden_states=context).sample
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
            if mode == "ControlNet is more important":  # the negative prompt's row gets no control at all
                torch.testing.assert_close(out[0], plain[0], rtol=0, atol=1e-6)
            else:
                assert (out[0] - plain[0]).abs().max() > 1e-3


def test_several_units_add_their_residuals(model, controlnet, hint):
    x, t, context = _inputs(model)
    other = tiny_controlnet(model.unet, seed=2)
    flipped = hint.flip(-1)
    with torch.no_grad():
        a = ActiveUnit(controlnet, hint, weight=0.6).residuals(x, t, context, torch.ones(2, 1, 1, 1))
        b = ActiveUnit(other, flipped, weight=1.2).residuals(x, t, context, torch.ones(2, 1, 1, 1))
        total = [p + q for p, q in zip(a, b, strict=True)]
        expected = model.unet(
            x, t, encoder_hidden_states=context, down_block_additional_residuals=total[:-1],
            mid_block_additional_residual=total[-1],
        ).sample  # fmt: skip
        units = [ActiveUnit(controlnet, hint, weight=0.6), ActiveUnit(other, flipped, weight=1.2)]
        out = ControlledUNet(model.unet, units, 10)(x, t, encoder_hidden_states=context).sample
    assert torch.equal(out, expected)
