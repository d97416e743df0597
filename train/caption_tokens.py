"""A caption → the token ids (and emphasis weights) the text encoder reads in training, chunked as our engine
chunks a prompt, so a LoRA trains on the conditioning it is later rendered with.

kohya's `--max_token_length` 75 / 150 / 225 is the caption's budget: 1, 2 or 3 chunks of 77 (BOS + 75 + EOS,
A1111's split, comma backtrack included). A shorter caption is padded with empty chunks (BOS, EOS, then
padding: what "" tokenizes to), a longer one is cut after its last chunk. With `weighted_captions` (kohya's
option) the caption is read in A1111's prompt language: `(tag:1.3)`, `[tag]` and `BREAK` weigh and split
it; without it brackets are plain text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inference.prompt_chunks import CHUNK_LENGTH, pad_token, tokenize_prompt

CLIP_LENGTH = CHUNK_LENGTH + 2  # 77: BOS + 75 + EOS
MAX_TOKEN_LENGTHS = (75, 150, 225)


@dataclass(frozen=True)
class CaptionTokens:
    """ids (77·n,) and, for weighted captions, one emphasis multiplier per id (77·n,)."""

    ids: torch.Tensor
    weights: torch.Tensor | None = None


def chunk_count(max_token_length: int) -> int:
    """75 → 1, 150 → 2, 225 → 3 chunks."""
    return max_token_length // CHUNK_LENGTH


def caption_tokens(
    tokenizer, caption: str, max_token_length: int = 75, weighted: bool = False
) -> CaptionTokens:
    """The caption as exactly `max_token_length / 75` chunks of 77 ids, flattened."""
    chunks = tokenize_prompt(tokenizer, caption, emphasis="Original" if weighted else "None")
    wanted = chunk_count(max_token_length)
    chunks = chunks[:wanted]
    empty = [tokenizer.bos_token_id, tokenizer.eos_token_id] + [pad_token(tokenizer)] * (CLIP_LENGTH - 2)
    ids = [token for chunk in chunks for token in chunk.tokens] + empty * (wanted - len(chunks))
    tokens = torch.tensor(ids, dtype=torch.long)
    if not weighted:
        return CaptionTokens(tokens)
    weights = [w for chunk in chunks for w in chunk.multipliers] + [1.0] * CLIP_LENGTH * (
        wanted - len(chunks)
    )
    return CaptionTokens(tokens, torch.tensor(weights, dtype=torch.float32))
