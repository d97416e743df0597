"""Prompt editing and alternation applied per denoiser call during sampling, as A1111 v1.10.1 does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inference.denoisers import CFGDenoiser
from inference.hires import HiresParams, generate_hires_batch, hires_timeline
from inference.img2img import img2img
from inference.models.tiny import build_tiny
from inference.prompts import get_learned_conditioning_prompt_schedules
from inference.samplers import get_sigmas_karras, sample_euler, sample_heun
from inference.scheduled_conds import PromptTimeline, ScheduledConds, schedule_steps
from inference.txt2img import GenerationParams, generate, generate_batch, prepare_sampling

# A fake encoding table: each text is a constant vector, so a recorded cond names its text.
TEXTS = ("", "red", "blue", "blurry", "dark")
FAST = dict(steps=4, width=64, height=64)


def fake_conds(prompts: list[str], steps: int, hires_steps: int | None = None) -> ScheduledConds:
    table = torch.stack([torch.full((77, 4), float(i)) for i in range(len(TEXTS))])
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps)
    return ScheduledConds.build(table, {text: i for i, text in enumerate(TEXTS)}, schedules)


def record(sampler, prompts, negatives, sampler_steps: int, prompt_steps: int):
    """Sample with a denoiser that records, per call, each image's (cond text, uncond text)."""
    calls: list[list[tuple[str, str]]] = []

    def denoiser(x, sigma, cond):
        names = [TEXTS[int(value)] for value in cond[:, 0, 0]]
        uncond, cond_names = names[: len(x) // 2], names[len(x) // 2 :]
        calls.append(list(zip(cond_names, uncond, strict=True)))
        return torch.zeros_like(x)

    guided = CFGDenoiser(
        denoiser, fake_conds(prompts, prompt_steps), fake_conds(negatives, prompt_steps), 7.0
    )
    x = torch.ones(len(prompts), 4, 2, 2)
    sampler(guided, x, get_sigmas_karras(sampler_steps, 0.1, 10.0))
    return calls, guided


def cond_texts(calls, image: int = 0) -> list[str]:
    return [call[image][0] for call in calls]


def test_an_edit_holds_its_first_text_through_call_when():
    # A1111 counts calls from 0 and takes the first entry ending at or after the call: [5, red] covers 0..5.
    assert get_learned_conditioning_prompt_schedules(["[red:blue:0.5]"], 10) == [[[5, "red"], [10, "blue"]]]
    calls, guided = record(sample_euler, ["[red:blue:0.5]"], [""], 10, 10)
    assert cond_texts(calls) == ["red"] * 6 + ["blue"] * 4
    assert guided.step == 10


def test_alternation_switches_every_call_after_the_first_two():
    calls, _ = record(sample_euler, ["[red|blue]"], [""], 6, 6)
    assert cond_texts(calls) == ["red", "red", "blue", "red", "blue", "red"]


def test_second_order_samplers_count_both_calls_of_a_step():
    # Heun: two calls a step but one on the last; A1111 doubles the schedule's steps for it.
    steps = 5
    calls, guided = record(sample_heun, ["[red:blue:0.5]"], [""], steps, schedule_steps(steps, True))
    assert guided.step == len(calls) == 9
    assert cond_texts(calls) == ["red"] * 6 + ["blue"] * 3


def test_negative_prompts_are_scheduled_and_images_keep_their_own_schedules():
    calls, _ = record(sample_euler, ["[red:blue:2]", "red"], ["[blurry:dark:2]", "blurry"], 4, 4)
    assert [call[0] for call in calls] == [("red", "blurry")] * 3 + [("blue", "dark")]
    assert [call[1] for call in calls] == [("red", "blurry")] * 4


def test_a_call_past_every_entry_falls_back_to_the_first_as_a1111():
    conds = fake_conds(["[red:blue:1]"], 2)
    assert [TEXTS[conds.rows_at(step)[0]] for step in range(4)] == ["red", "red", "blue", "red"]


def test_unedited_conditioning_is_built_once():
    calls, guided = record(sample_euler, ["red"], ["blurry"], 3, 3)
    assert cond_texts(calls) == ["red"] * 3
    kept = guided.cond_in
    guided(torch.ones(1, 4, 2, 2), torch.ones(1))
    assert guided.cond_in is kept


def test_prepare_sampling_counts_doubled_steps_for_second_order_samplers(model):
    params = GenerationParams("[red:blue:0.5]", "", sampler="Heun", **FAST)
    entries = prepare_sampling(model, [params]).denoise.cond.entries
    assert [end for end, _ in entries[0]] == [4, 8]


def test_the_hires_pass_counts_its_own_steps_after_the_first_pass():
    params = GenerationParams("x", steps=10, sampler="Euler")
    assert hires_timeline(params, HiresParams(steps=4)) == PromptTimeline(10, 4)
    assert hires_timeline(params, HiresParams(sampler="Heun")) == PromptTimeline(10, 20)


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=int)


def render(model, prompt: str, negative: str = "", seed: int = 1) -> np.ndarray:
    return pixels(generate(model, GenerationParams(prompt, negative, seed=seed, **FAST)))


def test_an_edited_prompt_renders_neither_of_its_texts(model):
    edited = render(model, "[red circle:blue circle:0.5]")
    assert not np.array_equal(edited, render(model, "red circle"))
    assert not np.array_equal(edited, render(model, "blue circle"))
    assert np.array_equal(render(model, "[red circle:red circle:0.5]"), render(model, "red circle"))


def test_a_scheduled_negative_prompt_renders_neither_of_its_texts(model):
    edited = render(model, "a circle", "[blurry:dark:0.5]")
    assert not np.array_equal(edited, render(model, "a circle", "blurry"))
    assert not np.array_equal(edited, render(model, "a circle", "dark"))
    assert np.array_equal(render(model, "a circle", "[dark:dark:0.5]"), render(model, "a circle", "dark"))


def test_a_batch_mixing_edited_and_plain_prompts_renders_each_as_alone(model):
    batch = [
        GenerationParams("[red circle:blue circle:0.5]", "", seed=3, **FAST),
        GenerationParams("a red circle", "[blurry|dark]", seed=4, **FAST),
    ]
    for params, image in zip(batch, generate_batch(model, batch), strict=True):
        assert np.abs(pixels(image) - pixels(generate(model, params))).max() <= 1


def test_img2img_counts_the_requested_steps_not_those_sampled(model):
    # 4 steps at strength 0.5 sample 3 calls (0..2), all within [2, "red circle"]: b is never reached.
    init = Image.new("RGB", (64, 64), (40, 90, 200))
    edited = GenerationParams("[red circle:blue circle:0.5]", seed=2, **FAST)
    plain = GenerationParams("red circle", seed=2, **FAST)
    assert np.array_equal(
        pixels(img2img(model, edited, init, 0.5)[0]), pixels(img2img(model, plain, init, 0.5)[0])
    )


def test_an_edit_after_the_first_pass_changes_only_the_hires_pass(model):
    hires = HiresParams(scale=1.5, steps=4)
    base = dict(seed=5, steps=2, width=64, height=48)
    plain = generate_hires_batch(model, [GenerationParams("red circle", **base)], hires)[0]
    # 1.5: the whole first pass, then half the hires pass: [2, red circle], [4, blue circle] (calls 0..3).
    edited = generate_hires_batch(model, [GenerationParams("[red circle:blue circle:1.5]", **base)], hires)[0]
    assert not np.array_equal(pixels(edited), pixels(plain))
