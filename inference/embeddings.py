"""Textual-inversion embeddings, as A1111 loads them: one file per trigger word, the file name is the word.

Formats: A1111's `.pt` (`string_to_param: {"*": (n, D)}`), `.safetensors` holding `emb_params` (n, D), and
diffusers' `learned_embeds.bin` / `.pt` (`{"<token>": (D,) or (n, D)}`). Pickles load with
`torch.load(weights_only=True)`: a file that needs more than tensors and plain containers is refused.
A prompt uses an embedding by writing its name; its n vectors take the place of the name's tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from data.file_hash import short_file_hash

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")


class EmbeddingError(ValueError):
    """A file in the embeddings folder that is not a usable textual-inversion embedding."""


@dataclass(frozen=True)
class Embedding:
    """A trigger word and its vectors (n, D): what its n placeholder tokens become in the text encoder."""

    name: str
    vectors: Tensor
    shorthash: str | None = None  # A1111's: the first 10 hex digits of the file's sha256 ("TI hashes")

    @property
    def length(self) -> int:
        """Number of token positions the embedding takes in a prompt chunk."""
        return int(self.vectors.shape[0])


def _read(path: Path) -> dict:
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own types for a truncated or foreign file
            raise EmbeddingError(f"{path}: not a readable .safetensors file ({error})") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types; all mean "not a plain tensor file"
        raise EmbeddingError(
            f"{path}: refused to load, it is not a plain tensor file ({type(error).__name__}: {error}). "
            "Only weights-only pickles are loaded; convert it to .safetensors with a trusted tool."
        ) from error


def _vectors(data: object, path: Path) -> Tensor:
    """The (n, D) vectors of an embedding file's contents."""
    if isinstance(data, dict) and "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if len(params) != 1:
            raise EmbeddingError(f"{path}: holds {len(params)} terms; an embedding file must hold one")
        vectors = next(iter(params.values()))
    elif isinstance(data, dict) and data and all(isinstance(v, Tensor) for v in data.values()):
        if len(data) != 1:
            raise EmbeddingError(
                f"{path}: holds {len(data)} tensors ({', '.join(list(data)[:4])}); an embedding file "
                "must hold one (SDXL embeddings with clip_l/clip_g are not for this model)"
            )
        vectors = next(iter(data.values()))
    else:
        raise EmbeddingError(f"{path}: neither an A1111 embedding (string_to_param) nor a diffusers concept")
    if not isinstance(vectors, Tensor):
        raise EmbeddingError(f"{path}: its vectors are a {type(vectors).__name__}, not a tensor")
    vectors = vectors.detach().float()
    if not bool(torch.isfinite(vectors).all()):
        raise EmbeddingError(f"{path}: its vectors hold NaN or infinite values (a diverged training run)")
    return vectors[None] if vectors.ndim == 1 else vectors


def load_embedding(path: str | Path) -> Embedding:
    """Read one embedding file; its trigger word is the file name without extension."""
    path = Path(path)
    vectors = _vectors(_read(path), path)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise EmbeddingError(f"{path}: vectors of shape {tuple(vectors.shape)}; expected (n, D) with n >= 1")
    return Embedding(path.stem, vectors, short_file_hash(path))


class EmbeddingDatabase:
    """Embeddings by the token ids of their names, for finding them in a tokenized prompt."""

    def __init__(self, tokenizer, hidden_size: int) -> None:
        self.tokenizer = tokenizer
        self.hidden_size = hidden_size
        self.embeddings: dict[str, Embedding] = {}
        self._by_first_id: dict[int, list[tuple[list[int], Embedding]]] = {}

    def add(self, embedding: Embedding) -> None:
        """Register `embedding`; a vector width other than the text encoder's is an error."""
        if embedding.vectors.shape[1] != self.hidden_size:
            raise EmbeddingError(
                f"embedding `{embedding.name}` has vectors of width {embedding.vectors.shape[1]}, but this "
                f"text encoder's is {self.hidden_size}: it was made for another model"
            )
        ids = self.tokenizer(embedding.name, add_special_tokens=False)["input_ids"]
        self.embeddings[embedding.name] = embedding
        candidates = [c for c in self._by_first_id.get(ids[0], []) if c[1].name != embedding.name]
        # Longest names first, so that `style-v2` wins over `style` where both match.
        self._by_first_id[ids[0]] = sorted([*candidates, (ids, embedding)], key=lambda c: -len(c[0]))

    def load_folder(self, folder: str | Path) -> list[str]:
        """Load every embedding file in `folder` (A1111's `embeddings/`); returns the files skipped, with why."""
        skipped = []
        for path in sorted(Path(folder).iterdir()):
            if path.suffix.lower() not in EMBEDDING_SUFFIXES or path.stat().st_size == 0:
                continue
            try:
                self.load_file(path)
            except EmbeddingError as error:
                log.warning("skipping embedding: %s", error)
                skipped.append(str(error))
        return skipped

    def load_file(self, path: Path) -> None:
        """Register the embedding in one file; EmbeddingError says why it does not fit."""
        self.add(load_embedding(path))

    def find_at(self, tokens: list[int], position: int) -> tuple[Embedding | None, int]:
        """The embedding whose name's tokens start at `tokens[position]`, and how many tokens the name has."""
        for ids, embedding in self._by_first_id.get(tokens[position], []):
            if tokens[position : position + len(ids)] == ids:
                return embedding, len(ids)
        return None, 0
