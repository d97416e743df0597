"""Textual-inversion embeddings for SDXL: one file holds vectors for each text encoder.

An SDXL embedding file (A1111's and kohya's) holds `clip_l` (n, 768) for the first encoder and `clip_g`
(n, 1280) for the second; A1111 places each encoder's part at the name's positions. Files with a single
tensor are made for SD 1/2 and are skipped, with the reason, as A1111 skips embeddings of another width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from data.file_hash import short_file_hash
from inference.embeddings import Embedding, EmbeddingDatabase, EmbeddingError
from inference.embeddings import _read as read_embedding_file


class SdxlEmbeddingDatabase(EmbeddingDatabase):
    """The first encoder's embeddings (`clip_l`, matched with its tokenizer), and in `second` the same
    names with their `clip_g` vectors for the second encoder."""

    def __init__(self, model) -> None:
        super().__init__(model.tokenizer, model.text_encoder.config.hidden_size)
        self.second = EmbeddingDatabase(model.tokenizer_2, model.text_encoder_2.config.hidden_size)

    def add_pair(self, name: str, clip_l: Tensor, clip_g: Tensor, shorthash: str | None = None) -> None:
        """Register one embedding: clip_l (n, D1), clip_g (n, D2); a width that does not fit is an error."""
        if clip_l.ndim != 2 or clip_g.ndim != 2 or clip_l.shape[0] != clip_g.shape[0] or not len(clip_l):
            raise EmbeddingError(
                f"embedding `{name}`: clip_l {tuple(clip_l.shape)} and clip_g {tuple(clip_g.shape)} must be "
                "(n, D) with the same n >= 1"
            )
        if not bool(torch.isfinite(clip_l).all() and torch.isfinite(clip_g).all()):
            raise EmbeddingError(f"embedding `{name}`: its vectors hold NaN or infinite values")
        self.add(Embedding(name, clip_l.detach().float(), shorthash))
        self.second.add(Embedding(name, clip_g.detach().float(), shorthash))

    def load_file(self, path: Path) -> None:
        """Register the SDXL embedding in one file (both encoders' vectors); `load_folder` walks a folder."""
        data = read_embedding_file(path)
        if not isinstance(data, dict) or not {"clip_l", "clip_g"} <= data.keys():
            raise EmbeddingError(f"{path}: not an SDXL embedding (no clip_l and clip_g vectors)")
        self.add_pair(path.stem, data["clip_l"], data["clip_g"], short_file_hash(path))


def embedding_database(model) -> EmbeddingDatabase:
    """An empty database of the kind `model` reads: two encoders' for SDXL, one otherwise."""
    if getattr(model, "text_encoder_2", None) is not None:
        return SdxlEmbeddingDatabase(model)
    return EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
