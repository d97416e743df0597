"""Text-encoder output caching (kohya's cache_text_encoder_outputs): each caption is encoded once.

Only valid while the text encoders are not trained and captions never change between epochs (no shuffle, no
dropout); the config check refuses the other combinations before anything loads. SD 1.x/2.x caches one
encoder's states; SDXL caches both encoders' joined states and the pooled embedding (kohya caches the same
three tensors).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from inference.models.bundle import ModelBundle
from train.caption_tokens import CaptionTokens
from train.sdxl_step import POOLED_KEY, encode_sdxl_text
from train.step import STATES_KEY, encode_text

CaptionInputs = Callable[[str], CaptionTokens]
# captions → {key: (B, ...) tensor}: one encoder pass over a chunk of distinct captions
EncodeChunk = Callable[[list[str]], dict[str, torch.Tensor]]


class TextCache:
    """What the text encoders give each caption: `lookup(caption)` → {"encoder_hidden_states": (77·n, D)}
    and, for SDXL, the pooled embedding (P,) under "pooled_text_embeds"."""

    def __init__(self, entries: dict[str, dict[str, torch.Tensor]]) -> None:
        self.entries = entries

    def lookup(self, caption: str) -> dict[str, torch.Tensor]:
        return self.entries[caption]

    def __len__(self) -> int:
        return len(self.entries)


@torch.no_grad()
def _encode_each_once(captions: list[str], encode: EncodeChunk, batch_size: int) -> TextCache:
    """Each distinct caption encoded once, `batch_size` per pass; outputs kept on CPU in the encoders' dtype."""
    distinct = sorted(set(captions))
    entries: dict[str, dict[str, torch.Tensor]] = {}
    for i in tqdm(range(0, len(distinct), batch_size), desc="caching text-encoder outputs", leave=False):
        chunk = distinct[i : i + batch_size]
        outputs = {key: value.cpu() for key, value in encode(chunk).items()}
        for row, caption in enumerate(chunk):
            entries[caption] = {key: value[row].clone() for key, value in outputs.items()}
    return TextCache(entries)


def _ids_and_weights(caption_inputs: CaptionInputs, chunk: list[str], device) -> tuple:
    inputs = [caption_inputs(caption) for caption in chunk]
    ids = torch.stack([item.ids for item in inputs]).to(device)
    weighted = inputs[0].weights is not None
    return ids, (torch.stack([item.weights for item in inputs]) if weighted else None)


def build_text_cache(
    captions: list[str],
    text_encoder: torch.nn.Module,
    caption_inputs: CaptionInputs,
    clip_skip: int,
    batch_size: int = 16,
) -> TextCache:
    """SD 1.x/2.x: each caption's hidden states (77·n, D), with clip_skip and emphasis as the step encodes."""
    device = next(text_encoder.parameters()).device

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        ids, weights = _ids_and_weights(caption_inputs, chunk, device)
        return {STATES_KEY: encode_text(text_encoder, ids, clip_skip, weights)}

    return _encode_each_once(captions, encode, batch_size)


def build_sdxl_text_cache(
    captions: list[str],
    bundle: ModelBundle,
    caption_inputs: CaptionInputs,
    caption_ids_2: Callable[[str], torch.Tensor],
    batch_size: int = 16,
) -> TextCache:
    """SDXL: each caption's joined states of both encoders (77·n, D1 + D2) and its pooled embedding (P,),
    exactly what `encode_sdxl_text` gives the step (emphasis included)."""
    device = next(bundle.text_encoder.parameters()).device

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        ids, weights = _ids_and_weights(caption_inputs, chunk, device)
        ids_2 = torch.stack([caption_ids_2(caption) for caption in chunk]).to(device)
        states, pooled = encode_sdxl_text(bundle.text_encoder, bundle.text_encoder_2, ids, ids_2, weights)
        return {STATES_KEY: states, POOLED_KEY: pooled}

    return _encode_each_once(captions, encode, batch_size)
