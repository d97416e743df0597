"""Infotext's "TI hashes": the textual-inversion embeddings a prompt used, with their files' short hashes."""

from __future__ import annotations

from inference.embeddings import Embedding, EmbeddingDatabase
from inference.prompt_chunks import tokenize_prompt
from inference.prompts import get_learned_conditioning_prompt_schedules


def embeddings_used(tokenizer, prompt: str, database: EmbeddingDatabase, steps: int) -> list[Embedding]:
    """The embeddings that any text of `prompt`'s edit schedule places, in order of first use."""
    [schedule] = get_learned_conditioning_prompt_schedules([prompt], steps)
    used: dict[str, Embedding] = {}
    for _, text in schedule:
        for chunk in tokenize_prompt(tokenizer, text, database):
            used.update((embedding.name, embedding) for _, embedding in chunk.fixes)
    return list(used.values())


def ti_hashes(
    tokenizer, prompt: str, negative_prompt: str, database: EmbeddingDatabase | None, steps: int
) -> str | None:
    """A1111's value, e.g. `style: 1a2b3c4d5e, bad-hands: 0f1e2d3c4b`; None when no embedding was used.

    The prompt's embeddings come first, then the negative prompt's (A1111 encodes the negative first and
    puts each later list in front). Colons and commas leave the names, so the value parses back.
    """
    if database is None:
        return None
    entries: dict[str, str] = {}
    for text in (prompt, negative_prompt):
        for embedding in embeddings_used(tokenizer, text, database, steps):
            if embedding.shorthash:
                name = embedding.name.replace(":", "").replace(",", "")
                entries.setdefault(name, f"{name}: {embedding.shorthash}")
    return ", ".join(entries.values()) or None
