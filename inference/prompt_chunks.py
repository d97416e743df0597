"""A prompt → CLIP token chunks with emphasis multipliers, the way A1111 splits it.

Each chunk is BOS + 75 positions + EOS (77), padded after its end token with the tokenizer's pad token:
EOS for SD 1's CLIP, `!` (id 0) for SD 2's OpenCLIP, as A1111 pads each. A chunk ends early at `BREAK`,
and when a chunk fills up less than `comma_backtrack` tokens after a comma, the words after that comma move
to the next chunk so a phrase is not cut in half. Textual-inversion embeddings take as many positions as
they have vectors and are never split across chunks. Emphasis modes: "Original" / "No norm" read
`(x:1.2)`-style weights, "Ignore" parses them but weighs every token 1, "None" treats brackets as plain text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.embeddings import Embedding, EmbeddingDatabase
from inference.prompts import parse_prompt_attention

CHUNK_LENGTH = 75  # prompt tokens per chunk; BOS and EOS make it CLIP's 77 positions
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
COMMA_BACKTRACK = 20  # A1111's default "comma padding backtrack"


@dataclass
class PromptChunk:
    """77 token ids, one multiplier per position, and the embeddings to place at given offsets."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)


def _weighted_segments(prompt: str, emphasis: str) -> list[tuple[str, float]]:
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f"unknown emphasis mode `{emphasis}`; use one of {', '.join(EMPHASIS_MODES)}")
    if emphasis == "None":
        return [(prompt, 1.0)]
    return [(text, float(weight)) for text, weight in parse_prompt_attention(prompt)]


def pad_token(tokenizer) -> int:
    """The id that fills a chunk after its end token: the tokenizer's pad token, else EOS (SD 1)."""
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


class _ChunkBuilder:
    def __init__(self, bos: int, eos: int, pad: int, comma: int | None, backtrack: int) -> None:
        self.bos, self.eos, self.pad, self.comma, self.backtrack = bos, eos, pad, comma, backtrack
        self.chunks: list[PromptChunk] = []
        self.chunk = PromptChunk()
        self.last_comma = -1

    def close(self) -> None:
        """Wrap the open chunk in BOS/EOS, pad it to 77 and start a new one."""
        chunk, pad = self.chunk, CHUNK_LENGTH - len(self.chunk.tokens)
        chunk.tokens = [self.bos, *chunk.tokens, self.eos, *[self.pad] * pad]
        chunk.multipliers = [1.0, *chunk.multipliers, *[1.0] * pad, 1.0]
        chunk.fixes = [(offset + 1, embedding) for offset, embedding in chunk.fixes]
        self.chunks.append(chunk)
        self.chunk, self.last_comma = PromptChunk(), -1

    def _move_words_after_last_comma(self) -> None:
        # Embeddings after the comma move with their placeholders (A1111 leaves them behind).
        cut = self.last_comma + 1
        chunk = self.chunk
        tokens, multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
        moved = [(offset - cut, emb) for offset, emb in chunk.fixes if offset >= cut]
        chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
        chunk.fixes = [(offset, emb) for offset, emb in chunk.fixes if offset < cut]
        self.close()
        self.chunk.tokens, self.chunk.multipliers, self.chunk.fixes = tokens, multipliers, moved

    def make_room(self, token: int) -> None:
        """Before `token` goes in: note commas, move a phrase cut by a full chunk, close a full chunk."""
        chunk = self.chunk
        if token == self.comma:
            self.last_comma = len(chunk.tokens)
        elif (
            self.backtrack
            and len(chunk.tokens) == CHUNK_LENGTH
            and self.last_comma != -1
            and len(chunk.tokens) - self.last_comma <= self.backtrack
        ):
            self._move_words_after_last_comma()
        if len(self.chunk.tokens) == CHUNK_LENGTH:
            self.close()

    def append(self, token: int, weight: float) -> None:
        self.chunk.tokens.append(token)
        self.chunk.multipliers.append(weight)

    def add_embedding(self, embedding: Embedding, weight: float) -> None:
        if len(self.chunk.tokens) + embedding.length > CHUNK_LENGTH:
            self.close()
        self.chunk.fixes.append((len(self.chunk.tokens), embedding))
        self.chunk.tokens += [0] * embedding.length  # placeholders: the vectors replace their embeddings
        self.chunk.multipliers += [weight] * embedding.length


def comma_token(tokenizer) -> int | None:
    """The id of CLIP's "," word token, or None if the vocabulary has none.

    Looked up by token, not through `get_vocab()`, which copies all 49,408 entries of SD's vocabulary.
    """
    token_id = tokenizer.convert_tokens_to_ids(",</w>")
    return None if token_id is None or token_id == tokenizer.unk_token_id else token_id


def tokenize_prompt(
    tokenizer,
    prompt: str,
    embeddings: EmbeddingDatabase | None = None,
    emphasis: str = "Original",
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[PromptChunk]:
    """`prompt` as A1111's chunks of 77 token ids with multipliers; at least one chunk."""
    segments = _weighted_segments(prompt, emphasis)
    builder = _ChunkBuilder(
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        pad_token(tokenizer),
        comma_token(tokenizer),
        comma_backtrack,
    )
    texts = [text for text, _ in segments]
    tokenized = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    for tokens, (text, weight) in zip(tokenized, segments, strict=True):
        if text == "BREAK" and weight == -1:
            builder.close()
            continue
        weight = 1.0 if emphasis == "Ignore" else weight
        position = 0
        while position < len(tokens):
            builder.make_room(tokens[position])
            embedding, length = embeddings.find_at(tokens, position) if embeddings else (None, 0)
            if embedding is None:
                builder.append(tokens[position], weight)
                position += 1
            else:
                builder.add_embedding(embedding, weight)
                position += length
    if builder.chunk.tokens or not builder.chunks:
        builder.close()
    return builder.chunks
