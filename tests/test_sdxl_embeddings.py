"""SDXL textual-inversion embeddings: `clip_l` vectors in the first encoder, `clip_g` in the second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference.embeddings import EmbeddingError
from inference.models.tiny_sdxl import build_tiny_sdxl
from inference.sdxl_embeddings import SdxlEmbeddingDatabase, embedding_database
from inference.sdxl_text import encode_sdxl_texts
from inference.text_encoding import TextOptions
from inference.ti_hashes import ti_hashes


@pytest.fixture(scope="module")
def model():
    bundle = build_tiny_sdxl(seed=0)
    bundle.freeze()
    return bundle


def _token_vectors(encoder, tokenizer, words: str) -> torch.Tensor:
    ids = torch.tensor(tokenizer(words, add_special_tokens=False)["input_ids"])
    return encoder.get_input_embeddings()(ids).detach()


def _write_sdxl_embedding(model, path: Path, words: str) -> None:
    """A file whose vectors are the token embeddings of `words` in each encoder."""
    save_file({
        "clip_l": _token_vectors(model.text_encoder, model.tokenizer, words).contiguous(),
        "clip_g": _token_vectors(model.text_encoder_2, model.tokenizer_2, words).contiguous(),
    }, path)  # fmt: skip


def test_each_encoder_places_its_own_vectors(model, tmp_path):
    _write_sdxl_embedding(model, tmp_path / "mytoken.safetensors", "red blue circle")
    save_file({"emb_params": torch.zeros(2, 32)}, tmp_path / "sd1.safetensors")
    database = embedding_database(model)
    skipped = database.load_folder(tmp_path)
    assert isinstance(database, SdxlEmbeddingDatabase) and list(database.embeddings) == ["mytoken"]
    assert len(skipped) == 1 and "sd1.safetensors" in skipped[0] and "clip_l" in skipped[0]
    with torch.no_grad():
        ours = encode_sdxl_texts(model, ["a mytoken star"], TextOptions(embeddings=database))[
            "a mytoken star"
        ]
        reference = encode_sdxl_texts(model, ["a red blue circle star"], TextOptions())[
            "a red blue circle star"
        ]
        plain = encode_sdxl_texts(model, ["a mytoken star"], TextOptions())["a mytoken star"]
    torch.testing.assert_close(ours, reference)
    assert (ours[0] - plain[0]).abs().max() > 1e-4
    assert ti_hashes(model.tokenizer, "a mytoken star", "", database, 4).startswith("mytoken: ")


def test_a_mismatched_sdxl_embedding_is_refused_by_name(model):
    database = SdxlEmbeddingDatabase(model)
    with pytest.raises(EmbeddingError, match="`bad`"):
        database.add_pair("bad", torch.zeros(2, 32), torch.zeros(3, 32))
    with pytest.raises(EmbeddingError, match="width 16"):
        database.add_pair("narrow", torch.zeros(2, 32), torch.zeros(2, 16))
