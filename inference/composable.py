"""Composable prompts, as A1111 v1.10.1 reads and guides them: `a red star AND a blue square :1.2`.

A prompt is split on the word AND (case-sensitive, whole word); a subprompt may end in `:weight`, its
weight in the guidance (default 1, negative allowed). Each distinct subprompt of a batch is one text,
encoded with its own prompt editing, and every subprompt of an image is one more row of the conditional
half of the UNet batch. The guided prediction (A1111's `CFGDenoiser.combine_denoised`) is

    uncond + sum_i weight_i * (cond_i - uncond) * cfg_scale

Negative prompts are not split (A1111 encodes them as written). A prompt without AND is one subprompt,
but the weight syntax still applies: `a cat :1.5` is "a cat" at weight 1.5, as in A1111; and trailing
whitespace is dropped from every subprompt.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from inference.scheduled_conds import PromptTimeline, ScheduledConds
from inference.text_encoding import TextOptions, encode_scheduled_conds

_AND = re.compile(r"\bAND\b")
# The subprompt's text (trailing whitespace left out) and an optional `: number` weight at its very end.
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")

CondsList = tuple[tuple[tuple[int, float], ...], ...]  # per image: (conditional row, weight) per subprompt


def get_multicond_prompt_list(
    prompts: list[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's split of a batch's prompts into subprompts: (indexes, flat list, index of each text).

    `indexes[i]` is prompt i's [(flat index, weight), ...] in order; the flat list holds each distinct
    subprompt text once, in order of first use, and the dict maps a text to its flat index.
    """
    indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    index_of: dict[str, int] = {}
    for prompt in prompts:
        parts = []
        for subprompt in _AND.split(prompt):
            match = _WEIGHT.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, None)
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            parts.append((index_of[text], float(weight) if weight is not None else 1.0))
        indexes.append(parts)
    return indexes, flat, index_of


def is_plain(conds_list: CondsList) -> bool:
    """Whether image i is guided by conditional row i alone at weight 1: classifier-free guidance as usual."""
    return all(conds == ((i, 1.0),) for i, conds in enumerate(conds_list))


def encode_composable_conds(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    negative_prompts: list[str],
    timeline: PromptTimeline,
    options: TextOptions,
) -> tuple[ScheduledConds, ScheduledConds, CondsList]:
    """A batch's conditioning with AND: (cond over every image's subprompts in turn, uncond per image, and
    A1111's `conds_list`, which cond rows and weights guide each image). Each subprompt is scheduled (prompt
    editing) and encoded on its own, all texts to one length, as `encode_scheduled_conds` does."""
    rows, conds_list = composable_rows(prompts)
    cond, uncond = encode_scheduled_conds(text_encoder, tokenizer, rows, negative_prompts, timeline, options)
    return cond, uncond, conds_list


def composable_rows(prompts: list[str]) -> tuple[list[str], CondsList]:
    """The conditional rows of a batch with AND (every image's subprompts in turn) and its `conds_list`."""
    indexes, flat, _ = get_multicond_prompt_list(prompts)
    rows = [flat[index] for parts in indexes for index, _ in parts]
    conds_list, row = [], 0
    for parts in indexes:
        conds_list.append(tuple((row + k, weight) for k, (_, weight) in enumerate(parts)))
        row += len(parts)
    return rows, tuple(conds_list)


def combine_denoised(uncond: Tensor, conds: Tensor, conds_list: CondsList, scale: float) -> Tensor:
    """A1111's combination: uncond (B, ...) plus each image's (cond row - uncond) * weight * scale, rows of
    `conds` (R, ...) in `conds_list` order, added one subprompt after another."""
    denoised = torch.clone(uncond)
    for i, conds_of_image in enumerate(conds_list):
        for row, weight in conds_of_image:
            denoised[i] += (conds[row] - uncond[i]) * (weight * scale)
    return denoised
