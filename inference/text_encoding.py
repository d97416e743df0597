"""Prompt → CLIP embeddings the way AUTOMATIC1111 does it: 75-token chunks, clip skip, padded cond/uncond."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer

CHUNK_LENGTH = 75  # prompt tokens per chunk; BOS and EOS make it CLIP's 77 positions


def tokenize_chunks(tokenizer: CLIPTokenizer, prompt: str) -> list[list[int]]:
    """Token ids of `prompt` as chunks of 77: BOS + 75 tokens (padded with EOS) + EOS; never empty."""
    # verbose=False: long prompts are the point here, the "sequence too long" warning is noise.
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pieces = [ids[i : i + CHUNK_LENGTH] for i in range(0, len(ids), CHUNK_LENGTH)] or [[]]
    # SD1's CLIP pads with EOS (not the tokenizer's pad id), as A1111 does.
    return [[bos, *piece, *[eos] * (CHUNK_LENGTH - len(piece)), eos] for piece in pieces]


def _transformer(text_encoder: nn.Module) -> nn.Module:
    """The module that owns `final_layer_norm`: `text_model` before transformers 5, the model itself after."""
    return getattr(text_encoder, "text_model", text_encoder)


def encode_chunks(text_encoder: CLIPTextModel, chunks: list[list[int]], clip_skip: int = 1) -> Tensor:
    """Encode token chunks (k, 77) independently and join them along the sequence: returns (1, 77*k, D)."""
    layers = text_encoder.config.num_hidden_layers
    if not 1 <= clip_skip <= layers:
        raise ValueError(f"clip_skip must be between 1 and {layers} for this text encoder, got {clip_skip}")
    device = next(text_encoder.parameters()).device
    ids = torch.tensor(chunks, dtype=torch.long, device=device)
    if clip_skip == 1:
        hidden = text_encoder(ids).last_hidden_state
    else:
        # A1111 applies the final LayerNorm to the earlier layer too; diffusers' pipelines count differently.
        states = text_encoder(ids, output_hidden_states=True).hidden_states
        hidden = _transformer(text_encoder).final_layer_norm(states[-clip_skip])
    return hidden.reshape(1, -1, hidden.shape[-1])


def encode_prompt(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompt: str, clip_skip: int = 1
) -> Tensor:
    """Encode one prompt without length limit: returns (1, 77*k, D) for a prompt of k chunks."""
    return encode_chunks(text_encoder, tokenize_chunks(tokenizer, prompt), clip_skip)


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
) -> tuple[Tensor, Tensor]:
    """Encode prompt and negative prompt to the same length (1, 77*k, D) so CFG can batch them."""
    return encode_batch_conds(text_encoder, tokenizer, [prompt], [negative_prompt], clip_skip)


def encode_batch_conds(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    negative_prompts: list[str],
    clip_skip: int = 1,
) -> tuple[Tensor, Tensor]:
    """Encode a batch's prompts and negative prompts, all to one length: (B, 77*k, D) each.

    The shorter ones are padded with encodings of the empty prompt, as A1111 pads conds (its "Pad conds"
    behaviour, and across a batch).
    """
    conds = [encode_prompt(text_encoder, tokenizer, text, clip_skip) for text in prompts]
    unconds = [encode_prompt(text_encoder, tokenizer, text, clip_skip) for text in negative_prompts]
    lengths = {embeds.shape[1] for embeds in conds + unconds}
    if len(lengths) > 1:
        empty = encode_prompt(text_encoder, tokenizer, "", clip_skip)
        chunks = max(lengths) // empty.shape[1]
        conds = [pad_to_chunks(embeds, chunks, empty) for embeds in conds]
        unconds = [pad_to_chunks(embeds, chunks, empty) for embeds in unconds]
    return torch.cat(conds), torch.cat(unconds)
