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
from train.step import text_conditioning

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


def build_text_cache(
    captions: list[str],
    bundle: ModelBundle,
    caption_inputs: CaptionInputs,
    clip_skip: int = 1,
    caption_ids_2: Callable[[str], torch.Tensor] | None = None,
    batch_size: int = 16,
) -> TextCache:
    """Each caption's text inputs as the step encodes them (`train.step.text_conditioning`: clip_skip and
    emphasis applied; for SDXL, with `caption_ids_2`, both encoders' joined states and the pooled embedding)."""
    device = next(bundle.text_encoder.parameters()).device

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        inputs = [caption_inputs(caption) for caption in chunk]
        ids = torch.stack([item.ids for item in inputs]).to(device)
        weights = torch.stack([item.weights for item in inputs]) if inputs[0].weights is not None else None
        ids_2 = torch.stack([caption_ids_2(c) for c in chunk]).to(device) if caption_ids_2 else None
        return text_conditioning(bundle, ids, ids_2, weights, clip_skip)

    return _encode_each_once(captions, encode, batch_size)
