"""Prompt → CLIP embeddings the way AUTOMATIC1111 does it: 75-token chunks, emphasis, embeddings, clip skip.

Tokenizing into chunks is `inference.prompt_chunks`; this module runs the text encoder on them, places
textual-inversion vectors, applies emphasis multipliers, and pads cond/uncond batches to one length;
`encode_scheduled_conds` encodes every text a batch's prompt editing reaches (`inference.scheduled_conds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer

from inference.embeddings import EmbeddingDatabase
from inference.prompt_chunks import COMMA_BACKTRACK, PromptChunk, tokenize_prompt
from inference.prompts import get_learned_conditioning_prompt_schedules
from inference.scheduled_conds import PromptTimeline, ScheduledConds


@dataclass(frozen=True)
class TextOptions:
    """How prompts become conditioning: A1111's clip skip, emphasis mode, comma backtrack and embeddings."""

    clip_skip: int = 1
    emphasis: str = "Original"
    comma_backtrack: int = COMMA_BACKTRACK
    embeddings: EmbeddingDatabase | None = None


def tokenize_chunks(tokenizer: CLIPTokenizer, prompt: str) -> list[list[int]]:
    """Token ids of `prompt` as chunks of 77: BOS + tokens + EOS + padding (see prompt_chunks); never empty."""
    return [chunk.tokens for chunk in tokenize_prompt(tokenizer, prompt)]


def _transformer(text_encoder: nn.Module) -> nn.Module:
    """The module that owns `final_layer_norm`: `text_model` before transformers 5, the model itself after."""
    return getattr(text_encoder, "text_model", text_encoder)


@contextmanager
def _placed_embeddings(text_encoder: nn.Module, chunks: list[PromptChunk]):
    """While active, the token-embedding layer outputs each chunk's embedding vectors at their offsets."""
    fixes = [(row, offset, emb) for row, chunk in enumerate(chunks) for offset, emb in chunk.fixes]
    if not fixes:
        yield
        return

    def place(_module, _inputs, output: Tensor) -> Tensor:
        output = output.clone()
        for row, offset, embedding in fixes:
            output[row, offset : offset + embedding.length] = embedding.vectors.to(output)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(place)
    try:
        yield
    finally:
        handle.remove()


def apply_emphasis(z: Tensor, multipliers: Tensor, emphasis: str) -> Tensor:
    """Scale each position by its multiplier; "Original" then restores the chunk's mean, as A1111."""
    if emphasis in ("Ignore", "None"):
        return z
    weighted = z * multipliers[..., None]
    new_mean = weighted.mean()
    # A mean of exactly 0 (an untrained LayerNorm's output, e.g. the tiny test model) has no scale to
    # restore; A1111's 0/0 would make the whole chunk NaN. Where the mean is not 0 this changes nothing.
    if emphasis == "No norm" or new_mean == 0:
        return weighted
    return weighted * (z.mean() / new_mean)


def encode_chunks(
    text_encoder: CLIPTextModel,
    chunks: list[PromptChunk] | list[list[int]],
    clip_skip: int = 1,
    emphasis: str = "Original",
) -> Tensor:
    """Encode a prompt's chunks (k of 77) independently and join them along the sequence: (1, 77*k, D)."""
    layers = text_encoder.config.num_hidden_layers
    if not 1 <= clip_skip <= layers:
        raise ValueError(f"clip_skip must be between 1 and {layers} for this text encoder, got {clip_skip}")
    chunks = [c if isinstance(c, PromptChunk) else PromptChunk(list(c), [1.0] * len(c)) for c in chunks]
    device = next(text_encoder.parameters()).device
    ids = torch.tensor([chunk.tokens for chunk in chunks], dtype=torch.long, device=device)
    with _placed_embeddings(text_encoder, chunks):
        if clip_skip == 1:
            hidden = text_encoder(ids).last_hidden_state
        else:
            # A1111 applies the final LayerNorm to the earlier layer too; diffusers' pipelines count differently.
            states = text_encoder(ids, output_hidden_states=True).hidden_states
            hidden = _transformer(text_encoder).final_layer_norm(states[-clip_skip])
    multipliers = torch.tensor([chunk.multipliers for chunk in chunks], device=device, dtype=hidden.dtype)
    # Each chunk restores its own mean (A1111 takes the mean over everything it encodes at once, which
    # for one prompt of one chunk is the same; per chunk keeps an image independent of its batch).
    z = torch.stack([apply_emphasis(h, m, emphasis) for h, m in zip(hidden, multipliers, strict=True)])
    return z.reshape(1, -1, z.shape[-1])


def encode_prompt(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompt: str,
    clip_skip: int = 1,
    options: TextOptions | None = None,
) -> Tensor:
    """Encode one prompt without length limit: returns (1, 77*k, D) for a prompt of k chunks."""
    options = options or TextOptions(clip_skip=clip_skip)
    chunks = tokenize_prompt(tokenizer, prompt, options.embeddings, options.emphasis, options.comma_backtrack)
    return encode_chunks(text_encoder, chunks, options.clip_skip, options.emphasis)


def pad_to_chunks(embeds: Tensor, chunks: int, empty_chunk: Tensor) -> Tensor:
    """Append copies of `empty_chunk` (1, 77, D) to `embeds` (1, 77*k, D) until it holds `chunks` chunks."""
    have = embeds.shape[1] // empty_chunk.shape[1]
    if have >= chunks:
        return embeds
    return torch.cat([embeds, empty_chunk.expand(embeds.shape[0], -1, -1).repeat(1, chunks - have, 1)], dim=1)


def encode_cond_uncond(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompt: str,
    negative_prompt: str,
    clip_skip: int = 1,
    options: TextOptions | None = None,
) -> tuple[Tensor, Tensor]:
    """Encode prompt and negative prompt to the same length (1, 77*k, D) so CFG can batch them."""
    return encode_batch_conds(text_encoder, tokenizer, [prompt], [negative_prompt], clip_skip, options)


def encode_texts(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, texts: Sequence[str], options: TextOptions
) -> dict[str, Tensor]:
    """Each distinct text of `texts` encoded once, all to one length: text → (1, 77*k, D).

    The shorter ones are padded with encodings of the empty prompt, as A1111 pads conds (its "Pad conds"
    behaviour, and across a batch); padding adds "" to the result.
    """
    tokenized = {
        text: tokenize_prompt(tokenizer, text, options.embeddings, options.emphasis, options.comma_backtrack)
        for text in dict.fromkeys(texts)
    }
    longest = max(len(chunks) for chunks in tokenized.values())
    if any(len(chunks) < longest for chunks in tokenized.values()) and "" not in tokenized:
        tokenized[""] = tokenize_prompt(tokenizer, "", options.embeddings, options.emphasis)
    # One text-encoder pass for every chunk of every text: each chunk is encoded on its own row anyway.
    every_chunk = [chunk for chunks in tokenized.values() for chunk in chunks]
    joined = encode_chunks(text_encoder, every_chunk, options.clip_skip, options.emphasis)
    width = joined.shape[1] // len(every_chunk)
    encoded, start = {}, 0
    for text, chunks in tokenized.items():
        encoded[text] = joined[:, start * width : (start + len(chunks)) * width]
        start += len(chunks)
    if longest > 1 and "" in encoded:
        encoded = {text: pad_to_chunks(embeds, longest, encoded[""]) for text, embeds in encoded.items()}
    return encoded


def encode_batch_conds(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    negative_prompts: list[str],
    clip_skip: int = 1,
    options: TextOptions | None = None,
) -> tuple[Tensor, Tensor]:
    """Encode a batch's prompts and negative prompts as written, all to one length: (B, 77*k, D) each.

    Each distinct text is encoded once; padding as in `encode_texts`.
    """
    options = options or TextOptions(clip_skip=clip_skip)
    encoded = encode_texts(text_encoder, tokenizer, [*prompts, *negative_prompts], options)
    return torch.cat([encoded[text] for text in prompts]), torch.cat([encoded[t] for t in negative_prompts])


def encode_scheduled_conds(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    negative_prompts: list[str],
    timeline: PromptTimeline,
    options: TextOptions,
) -> tuple[ScheduledConds, ScheduledConds]:
    """A batch's prompts and negative prompts with their prompt editing, as (cond, uncond) schedules.

    Every text any schedule reaches is encoded once, all to one length, into one table both share.
    """
    schedules = [
        get_learned_conditioning_prompt_schedules(texts, timeline.base_steps, timeline.hires_steps)
        for texts in (prompts, negative_prompts)
    ]
    texts = [str(text) for batch in schedules for schedule in batch for _, text in schedule]
    encoded = encode_texts(text_encoder, tokenizer, texts, options)
    rows = {text: row for row, text in enumerate(encoded)}
    table = torch.cat(list(encoded.values()))
    cond, uncond = (ScheduledConds.build(table, rows, batch) for batch in schedules)
    return cond, uncond
