"""SDXL prompt encoding as A1111 v1.10.1 does it: both text encoders, each with A1111's chunking.

Each encoder tokenizes the prompt on its own into chunks of 77 (`inference.prompt_chunks`: 75 tokens,
BREAK, comma backtrack, emphasis weights; the first pads with its end token, the second with `!`, id 0,
as A1111's OpenCLIP embedder). Per chunk:

* CLIP ViT-L gives its penultimate layer's output, *without* the final LayerNorm (SDXL's config layer
  "hidden", index 11). A1111 ignores clip skip here unless its `sdxl_clip_l_skip` setting is on, which
  is off by default; so do we (clip skip is still written to the infotext as A1111 writes it).
* OpenCLIP ViT-bigG gives its penultimate layer's output, also without LayerNorm, and its pooled,
  projected output (final LayerNorm at the first end token, through `text_projection`).
* Emphasis multiplies each encoder's tokens and restores that encoder's mean, chunk by chunk.

The cross-attention tokens are both outputs side by side (D1 + D2), the chunks joined along the sequence;
the pooled output is the *first* chunk's (A1111 returns `zs[0].pooled`). The UNet's time ids are A1111's
micro-conditioning: original size = target size = the render size (height, width), crop (top, left) from
its `sdxl_crop_top/left` settings (0, 0). When every negative prompt of a batch is empty, the negative
side is all zeros (crossattn and pooled; A1111's `force_zero_embeddings`), not the encoding of "".
Shorter prompts are padded to the batch's longest with the encoding of "" (crossattn only), as A1111's
`pad_cond`. Textual-inversion embeddings (`inference.sdxl_embeddings`) place their `clip_l` vectors in
the first encoder and `clip_g` in the second.

diffusers' `StableDiffusionXLPipeline.encode_prompt` gives the same tensors for a one-chunk prompt without
emphasis or BREAK (same layers, same padding tokens, pooled output at the first end token). It differs in
that it truncates at 77 tokens, reads no emphasis, embeddings or BREAK, and encodes an explicit
`negative_prompt=""` as text: only `negative_prompt=None` (with `force_zeros_for_empty_prompt`) is zeros,
which is what A1111 does for "".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inference.composable import CondsList, composable_rows, encode_composable_conds
from inference.prompt_chunks import CHUNK_LENGTH, PromptChunk, tokenize_prompt
from inference.prompts import get_learned_conditioning_prompt_schedules
from inference.scheduled_conds import PromptTimeline, ScheduledConds
from inference.sdxl_conds import SdxlCond
from inference.sdxl_embeddings import SdxlEmbeddingDatabase
from inference.text_encoding import TextOptions, _placed_embeddings, apply_emphasis

# SGM's `layer_idx` for both encoders of SDXL base: the penultimate block's output, no final LayerNorm.
SDXL_HIDDEN_LAYER = -2


def sdxl_time_ids(width: int, height: int, rows: int, crop_top: int = 0, crop_left: int = 0) -> Tensor:
    """(rows, 6): original (h, w), crop (top, left), target (h, w), as A1111's SDXL conditioning."""
    row = [height, width, crop_top, crop_left, height, width]
    return torch.tensor([row], dtype=torch.float32).repeat(rows, 1)


def _chunks(model, text: str, options: TextOptions) -> tuple[list[PromptChunk], list[PromptChunk]]:
    """The text's chunks for each encoder, with its own tokenizer and its part of each embedding."""
    first = second = None
    if isinstance(options.embeddings, SdxlEmbeddingDatabase):
        first, second = options.embeddings, options.embeddings.second
    return (
        tokenize_prompt(model.tokenizer, text, first, options.emphasis, options.comma_backtrack),
        tokenize_prompt(model.tokenizer_2, text, second, options.emphasis, options.comma_backtrack),
    )


def _hidden(encoder, chunks: list[PromptChunk], emphasis: str) -> tuple[Tensor, Tensor | None]:
    """One encoder over chunks (N of 77): penultimate hidden states with emphasis (N, 77, D), and the
    pooled projected output (N, P) where the encoder has a projection."""
    device = next(encoder.parameters()).device
    ids = torch.tensor([chunk.tokens for chunk in chunks], dtype=torch.long, device=device)
    with _placed_embeddings(encoder, chunks):
        out = encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[SDXL_HIDDEN_LAYER]
    multipliers = torch.tensor([chunk.multipliers for chunk in chunks], device=device, dtype=hidden.dtype)
    z = torch.stack([apply_emphasis(h, m, emphasis) for h, m in zip(hidden, multipliers, strict=True)])
    return z, getattr(out, "text_embeds", None)


def encode_sdxl_texts(model, texts: Sequence[str], options: TextOptions) -> dict[str, tuple[Tensor, Tensor]]:
    """Each distinct text once → (crossattn (1, 77*k, D1+D2), pooled (1, P)), all padded to one length.

    `model` has SDXL's `text_encoder`, `tokenizer`, `text_encoder_2` and `tokenizer_2`.
    """
    tokenized = {text: _chunks(model, text, options) for text in dict.fromkeys(texts)}
    longest = max(len(first) for first, _ in tokenized.values())
    if any(len(first) < longest for first, _ in tokenized.values()) and "" not in tokenized:
        tokenized[""] = _chunks(model, "", options)
    for text, (first, second) in tokenized.items():
        if len(first) != len(second):  # two tokenizers that split one prompt differently
            raise ValueError(f"SDXL's tokenizers split {text!r} into {len(first)} and {len(second)} chunks")
    # One pass per encoder over every chunk of every text: each chunk is encoded on its own row anyway.
    z1, _ = _hidden(
        model.text_encoder, [c for first, _ in tokenized.values() for c in first], options.emphasis
    )
    z2, pooled = _hidden(
        model.text_encoder_2, [c for _, second in tokenized.values() for c in second], options.emphasis
    )
    joined = torch.cat([z1, z2], dim=-1)  # (N, 77, D1+D2)
    encoded, start = {}, 0
    for text, (first, _) in tokenized.items():
        count = len(first)
        rows = joined[start : start + count]
        encoded[text] = (rows.reshape(1, -1, rows.shape[-1]), pooled[start : start + 1])
        start += count
    if longest > 1:
        empty = encoded[""][0]
        encoded = {text: (_pad(z, longest, empty), p) for text, (z, p) in encoded.items()}
    return encoded


def _pad(z: Tensor, chunks: int, empty: Tensor) -> Tensor:
    """z: (1, 77*k, D) with copies of `empty` (1, 77, D) appended up to `chunks` chunks."""
    missing = chunks - z.shape[1] // empty.shape[1]
    return torch.cat([z, *[empty] * missing], dim=1) if missing > 0 else z


def _table(encoded: dict[str, tuple[Tensor, Tensor]], time_ids: Tensor) -> SdxlCond:
    """All encoded texts as one SdxlCond of N rows, in the dict's order."""
    crossattn = torch.cat([z for z, _ in encoded.values()])
    pooled = torch.cat([p for _, p in encoded.values()])
    return SdxlCond(crossattn, pooled, time_ids.repeat(len(encoded), 1).to(crossattn))


def encode_sdxl_scheduled_conds(
    model,
    prompts: list[str],
    negative_prompts: list[str],
    timeline: PromptTimeline,
    options: TextOptions,
    size: tuple[int, int],
) -> tuple[ScheduledConds, ScheduledConds]:
    """A batch's prompts and negative prompts with prompt editing, as SDXL (cond, uncond) schedules.

    size: (width, height) of the render, SDXL's original and target size.
    """
    schedules = [
        get_learned_conditioning_prompt_schedules(texts, timeline.base_steps, timeline.hires_steps)
        for texts in (prompts, negative_prompts)
    ]
    texts = [str(text) for batch in schedules for schedule in batch for _, text in schedule]
    encoded = encode_sdxl_texts(model, texts, options)
    time_ids = sdxl_time_ids(*size, rows=1)
    table = _table(encoded, time_ids)
    rows = {text: row for row, text in enumerate(encoded)}
    cond = ScheduledConds.build(table, rows, schedules[0])
    negative_texts = {str(text) for schedule in schedules[1] for _, text in schedule}
    if negative_texts != {""}:
        return cond, ScheduledConds.build(table, rows, schedules[1])
    # A1111 zeroes the text part of an all-empty negative batch; padding to a longer prompt stays "".
    crossattn = encoded[""][0].clone()
    crossattn[:, : CHUNK_LENGTH + 2] = 0  # the "" prompt's one chunk; any later ones are padding
    zero = SdxlCond(crossattn, torch.zeros_like(encoded[""][1]), time_ids.to(crossattn))
    return cond, ScheduledConds.build(zero, {"": 0}, schedules[1])


def encode_sdxl_composable_conds(
    model,
    prompts: list[str],
    negative_prompts: list[str],
    timeline: PromptTimeline,
    options: TextOptions,
    size: tuple[int, int],
) -> tuple[ScheduledConds, ScheduledConds, CondsList]:
    """As `inference.composable.encode_composable_conds`, for SDXL: prompts split on AND, each subprompt a row."""
    rows, conds_list = composable_rows(prompts)
    cond, uncond = encode_sdxl_scheduled_conds(model, rows, negative_prompts, timeline, options, size)
    return cond, uncond, conds_list


def encode_model_conds(
    model,
    prompts: list[str],
    negative_prompts: list[str],
    timeline: PromptTimeline,
    options: TextOptions,
    size: tuple[int, int],
) -> tuple[ScheduledConds, ScheduledConds, CondsList]:
    """A batch's (cond, uncond, conds_list) for `model`: SDXL's two encoders where it has a second one,
    else the SD 1/2 path unchanged. size: (width, height) of the render."""
    if getattr(model, "text_encoder_2", None) is None:
        return encode_composable_conds(
            model.text_encoder, model.tokenizer, prompts, negative_prompts, timeline, options
        )
    return encode_sdxl_composable_conds(model, prompts, negative_prompts, timeline, options, size)
