"""Text-encoder output caching (kohya's cache_text_encoder_outputs): each caption is encoded once.

Only valid while the text encoder is not trained and captions never change between epochs (no shuffle, no
dropout); the config check refuses the other combinations before anything loads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from train.caption_tokens import CaptionTokens
from train.step import encode_text


class TextCache:
    """Hidden states (77·n, D) of every caption: `lookup(caption)`."""

    def __init__(self, states: dict[str, torch.Tensor]) -> None:
        self.states = states

    def lookup(self, caption: str) -> torch.Tensor:
        return self.states[caption]

    def __len__(self) -> int:
        return len(self.states)


@torch.no_grad()
def build_text_cache(
    captions: list[str],
    text_encoder: torch.nn.Module,
    caption_inputs: Callable[[str], CaptionTokens],
    clip_skip: int,
    batch_size: int = 16,
) -> TextCache:
    """Encode each distinct caption once, `batch_size` per pass; states stay in the encoder's dtype, on CPU."""
    distinct = sorted(set(captions))
    states: dict[str, torch.Tensor] = {}
    device = next(text_encoder.parameters()).device
    for i in tqdm(range(0, len(distinct), batch_size), desc="caching text-encoder outputs", leave=False):
        chunk = distinct[i : i + batch_size]
        inputs = [caption_inputs(caption) for caption in chunk]
        ids = torch.stack([item.ids for item in inputs]).to(device)
        weighted = inputs[0].weights is not None
        weights = torch.stack([item.weights for item in inputs]) if weighted else None
        hidden = encode_text(text_encoder, ids, clip_skip, weights).cpu()
        states.update({caption: h.clone() for caption, h in zip(chunk, hidden, strict=True)})
    return TextCache(states)
