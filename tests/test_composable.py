"""Composable prompts (AND) as A1111 v1.10.1: the split, the encoding per subprompt, the guidance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from inference.composable import combine_denoised, encode_composable_conds, get_multicond_prompt_list
from inference.denoisers import CFGDenoiser
from inference.hires import HiresParams, generate_hires_batch
from inference.img2img import img2img
from inference.models.tiny import build_tiny
from inference.scheduled_conds import PromptTimeline
from inference.text_encoding import TextOptions
from inference.txt2img import GenerationParams, sample_latents

FAST = dict(steps=3, width=64, height=64)


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


# A1111's prompt_parser has no doctests for `get_multicond_prompt_list`; these cases follow its two regexes:
# re_AND = \bAND\b, and re_weight, whose lazy text group leaves trailing whitespace and a `: number` weight.
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a AND b", [("a", 1.0), (" b", 1.0)]),  # leading whitespace stays, trailing goes
        ("a red star AND a blue square :1.2", [("a red star", 1.0), (" a blue square", 1.2)]),
        ("a:0.5 AND b : -1", [("a", 0.5), (" b", -1.0)]),
        ("cat:5.", [("cat", 5.0)]),
        ("cat: .5  ", [("cat", 0.5)]),
        ("cat:+2", [("cat", 2.0)]),
        ("cat:1e2", [("cat:1e2", 1.0)]),  # no exponent: no weight
        ("(masterpiece:1.2), cat", [("(masterpiece:1.2), cat", 1.0)]),
        ("(a:1.1) AND b", [("(a:1.1)", 1.0), (" b", 1.0)]),  # the emphasis weight is no AND weight
        ("a cat ", [("a cat", 1.0)]),
        ("a ANDb", [("a ANDb", 1.0)]),  # AND must be a whole word
        ("a and b", [("a and b", 1.0)]),  # and upper case
        ("a\nAND\nb", [("a", 1.0), ("\nb", 1.0)]),
        ("AND", [("", 1.0), ("", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_split_and_weights(prompt, expected):
    indexes, flat, index_of = get_multicond_prompt_list([prompt])
    assert [(flat[i], weight) for i, weight in indexes[0]] == expected
    assert index_of == {text: flat.index(text) for text in flat}


def test_each_distinct_subprompt_of_a_batch_is_listed_once():
    indexes, flat, index_of = get_multicond_prompt_list(["a AND b", "a AND c :2", "b", "a AND a"])
    assert flat == ["a", " b", " c", "b", " a"]
    assert indexes == [[(0, 1.0), (1, 1.0)], [(0, 1.0), (2, 2.0)], [(3, 1.0)], [(0, 1.0), (4, 1.0)]]
    assert index_of == {"a": 0, " b": 1, " c": 2, "b": 3, " a": 4}


def test_combination_by_hand():
    uncond = torch.tensor([[1.0], [10.0]])
    conds = torch.tensor([[3.0], [0.0], [20.0]])
    out = combine_denoised(uncond, conds, (((0, 1.0), (1, -0.5)), ((2, 2.0),)), 4.0)
    # image 0: 1 + (3 - 1) * 4 + (0 - 1) * -2; image 1: 10 + (20 - 10) * 8
    torch.testing.assert_close(out, torch.tensor([[11.0], [90.0]]))


def test_cfg_denoiser_batches_every_subprompt_with_the_unconds():
    calls = []

    def denoiser(x, sigma, cond):
        calls.append((x.shape[0], x[:, 0, 0, 0].tolist()))
        return torch.ones_like(x) * cond.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    conds = torch.tensor([3.0, 5.0, 7.0]).reshape(3, 1, 1).expand(3, 4, 2)
    unconds = torch.tensor([1.0, 2.0]).reshape(2, 1, 1).expand(2, 4, 2)
    guided = CFGDenoiser(denoiser, conds, unconds, 2.0, conds_list=(((0, 1.0), (1, 0.5)), ((2, 1.0),)))
    x = torch.stack([torch.zeros(1, 1, 1), torch.ones(1, 1, 1)])
    out = guided(x, torch.tensor([1.0, 1.0]))
    assert calls == [(5, [0.0, 1.0, 0.0, 0.0, 1.0])]  # unconds, then image 0 twice and image 1 once
    torch.testing.assert_close(out.flatten(), torch.tensor([1 + 2 * 2 + 4 * 0.5 * 2, 2 + 5 * 2.0]))
    torch.testing.assert_close(guided.last_uncond.flatten(), torch.tensor([1.0, 2.0]))
    exact = CFGDenoiser(denoiser, conds, unconds, 2.0, True, (((0, 1.0), (1, 0.5)), ((2, 1.0),)))
    calls.clear()
    assert torch.equal(exact(x, torch.tensor([1.0, 1.0])), out)
    assert [size for size, _ in calls] == [3, 2]  # one call per image: its uncond and its subprompts
    with pytest.raises(ValueError, match="must match"):
        CFGDenoiser(denoiser, conds, unconds, 2.0, conds_list=(((0, 1.0),), ((1, 1.0),)))


def test_each_subprompt_has_its_own_prompt_editing(model):
    cond, uncond, conds_list = encode_composable_conds(
        model.text_encoder,
        model.tokenizer,
        ["a [red:blue:2] star AND a square", "a square"],
        ["", "blurry"],
        PromptTimeline(6),
        TextOptions(),
    )
    assert conds_list == (((0, 1.0), (1, 1.0)), ((2, 1.0),))
    assert cond.batch_size == 3 and uncond.batch_size == 2
    early, late = cond.rows_at(2), cond.rows_at(3)
    assert early[0] != late[0] and early[1:] == late[1:]  # only the edited subprompt switches, after step 2
    assert early[1] != early[2]  # " a square" keeps its leading space: another text, the same tokens
    torch.testing.assert_close(cond.encodings[early[1]], cond.encodings[early[2]])


def latents(model, *batch):
    with torch.no_grad():
        return sample_latents(model, list(batch))


def test_txt2img_with_and(model):
    base = dict(seed=3, cfg_scale=3.0, **FAST)
    params = GenerationParams("a red star AND a blue square", **base)
    both = latents(model, params)
    assert torch.isfinite(both).all() and torch.equal(both, latents(model, params))
    assert not torch.allclose(both, latents(model, GenerationParams("a red star", **base)))
    # A weight scales the subprompt's guidance: weight 2 at CFG 3 is weight 1 at CFG 6, bit for bit.
    double = latents(model, GenerationParams("a red star :2", **base))
    assert torch.equal(double, latents(model, GenerationParams("a red star", **{**base, "cfg_scale": 6.0})))
    # Twice the same subprompt adds its guidance twice (two rows of one batch: rounding apart).
    twice = latents(model, GenerationParams("a red star AND a red star", **base))
    torch.testing.assert_close(twice, double, rtol=1e-4, atol=1e-4)


def test_and_in_a_batch_keeps_each_image_as_alone(model):
    batch = [
        GenerationParams("a red star AND a blue square :0.7", seed=3, sampler="Euler a", **FAST),
        GenerationParams("a green circle", "blurry", seed=4, sampler="Euler a", **FAST),
    ]
    together = latents(model, *batch)
    for index, params in enumerate(batch):
        torch.testing.assert_close(together[index : index + 1], latents(model, params), rtol=1e-3, atol=1e-3)
    exact = [dataclasses.replace(params, exact_batch=True) for params in batch]
    together = latents(model, *exact)
    for index, params in enumerate(exact):
        assert torch.equal(together[index : index + 1], latents(model, params))


def test_img2img_and_hires_read_and(model):
    """Both passes of the hires fix, and img2img, guide by the subprompt weights: weight 2 at CFG 3 renders
    what weight 1 renders at CFG 6 (the weight's text encoded as written would give another picture)."""
    weighted = GenerationParams("a red star :2", seed=5, sampler="Euler", cfg_scale=3.0, **FAST)
    plain = dataclasses.replace(weighted, prompt="a red star", cfg_scale=6.0)
    start = Image.new("RGB", (64, 64), (200, 40, 40))
    composed, single = (np.asarray(img2img(model, p, start, 0.6)[0]) for p in (weighted, plain))
    assert np.array_equal(composed, single)
    hires = HiresParams(scale=1.5, steps=2)
    composed, single = (np.asarray(generate_hires_batch(model, [p], hires)[0]) for p in (weighted, plain))
    assert composed.shape == (96, 96, 3) and np.array_equal(composed, single)
    unweighted = dataclasses.replace(weighted, prompt="a red star")  # at CFG 3: another picture
    assert not np.array_equal(np.asarray(generate_hires_batch(model, [unweighted], hires)[0]), single)
