"""A1111's text encoding: chunks, BREAK, comma backtrack, emphasis modes and textual-inversion embeddings."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from inference.embeddings import Embedding, EmbeddingDatabase, EmbeddingError, load_embedding
from inference.models.tiny import build_tiny
from inference.prompt_chunks import tokenize_prompt
from inference.text_encoding import TextOptions, encode_chunks, encode_prompt, tokenize_chunks
from inference.ti_hashes import ti_hashes


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def _id(tokenizer, word: str) -> int:
    (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]
    return token


def test_emphasis_weights_the_bracketed_tokens(model):
    tok = model.tokenizer
    red, circle = _id(tok, "red"), _id(tok, "circle")
    (chunk,) = tokenize_prompt(tok, "a (red:1.5) [circle]")
    assert chunk.tokens[:4] == [tok.bos_token_id, _id(tok, "a"), red, circle]
    assert chunk.multipliers[:4] == pytest.approx([1.0, 1.0, 1.5, 1 / 1.1])
    assert set(chunk.multipliers[4:]) == {1.0}
    (plain,) = tokenize_prompt(tok, "a (red:1.5) [circle]", emphasis="Ignore")
    assert plain.tokens == chunk.tokens and set(plain.multipliers) == {1.0}
    (literal,) = tokenize_prompt(tok, "(red)", emphasis="None")  # brackets are text
    assert literal.tokens[1:4] == tok("(red)", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="emphasis"):
        tokenize_prompt(tok, "red", emphasis="Strong")


def test_original_emphasis_scales_and_restores_the_mean(model):
    te, tok = model.text_encoder, model.tokenizer
    with torch.no_grad():
        raw = encode_prompt(te, tok, "a red circle")
        weighted = encode_prompt(te, tok, "a (red:1.5) circle")
        no_norm = encode_prompt(te, tok, "a (red:1.5) circle", options=TextOptions(emphasis="No norm"))
        ignored = encode_prompt(te, tok, "a (red:1.5) circle", options=TextOptions(emphasis="Ignore"))
    scale = torch.ones(77)
    scale[2] = 1.5
    expected_no_norm = raw * scale[None, :, None]
    torch.testing.assert_close(no_norm, expected_no_norm)
    torch.testing.assert_close(weighted, expected_no_norm * (raw.mean() / expected_no_norm.mean()))
    torch.testing.assert_close(weighted.mean(), raw.mean())
    assert torch.equal(ignored, raw)


def test_break_starts_a_new_chunk(model):
    tok = model.tokenizer
    chunks = tokenize_chunks(tok, "red BREAK blue")
    eos = tok.eos_token_id
    assert chunks == [
        [tok.bos_token_id, _id(tok, "red"), *[eos] * 75],
        [tok.bos_token_id, _id(tok, "blue"), *[eos] * 75],
    ]


def test_comma_backtrack_moves_the_cut_phrase_to_the_next_chunk(model):
    tok = model.tokenizer
    red, blue, comma = _id(tok, "red"), _id(tok, "blue"), tok.get_vocab()[",</w>"]
    prompt = " ".join(["red"] * 70) + ", " + " ".join(["blue"] * 10)
    first, second = tokenize_chunks(tok, prompt)
    assert first[1:72] == [red] * 70 + [comma] and set(first[72:]) == {tok.eos_token_id}
    assert second[1:11] == [blue] * 10
    cut, rest = (c.tokens for c in tokenize_prompt(tok, prompt, comma_backtrack=0))
    assert cut[72:76] == [blue] * 4 and rest[1:7] == [blue] * 6  # off: a plain cut after 75 tokens
    far = " ".join(["red"] * 50) + ", " + " ".join(["blue"] * 40)  # the comma is 25 tokens back
    assert tokenize_chunks(tok, far)[0][52:76] == [blue] * 24


def _vectors_of(model, words: str) -> torch.Tensor:
    ids = torch.tensor(model.tokenizer(words, add_special_tokens=False)["input_ids"])
    return model.text_encoder.get_input_embeddings()(ids).detach()


@pytest.mark.parametrize("fmt", ["a1111_pt", "safetensors", "diffusers_bin"])
def test_an_embedding_stands_for_its_vectors(model, tmp_path, fmt):
    te, tok = model.text_encoder, model.tokenizer
    vectors = _vectors_of(model, "red blue circle")  # three vectors
    if fmt == "a1111_pt":
        path = tmp_path / "mytoken.pt"
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "x"}, path)
    elif fmt == "safetensors":
        path = tmp_path / "mytoken.safetensors"
        save_file({"emb_params": vectors.contiguous()}, path)
    else:
        path = tmp_path / "mytoken.bin"
        torch.save({"<mytoken>": vectors}, path)
    embedding = load_embedding(path)
    assert embedding.name == "mytoken" and embedding.length == 3  # the file name is the trigger word
    database = EmbeddingDatabase(tok, te.config.hidden_size)
    database.add(embedding)
    with torch.no_grad():
        ours = encode_prompt(te, tok, "a mytoken star", options=TextOptions(embeddings=database))
        reference = encode_prompt(te, tok, "a red blue circle star")
    torch.testing.assert_close(ours, reference)


def test_an_embedding_is_never_split_across_chunks(model):
    tok = model.tokenizer
    database = EmbeddingDatabase(tok, model.text_encoder.config.hidden_size)
    database.add(Embedding("mytoken", torch.randn(3, model.text_encoder.config.hidden_size)))
    chunks = tokenize_prompt(tok, " ".join(["red"] * 74) + " mytoken", database)
    assert len(chunks) == 2 and chunks[0].fixes == [] and chunks[0].tokens[75] == tok.eos_token_id
    ((offset, embedding),) = chunks[1].fixes
    assert offset == 1 and embedding.name == "mytoken" and chunks[1].tokens[1:4] == [0, 0, 0]


def test_the_longest_matching_embedding_name_wins(model):
    tok = model.tokenizer
    database = EmbeddingDatabase(tok, 32)
    database.add(Embedding("red", torch.zeros(1, 32)))
    database.add(Embedding("red_blue", torch.zeros(2, 32)))
    tokens = tok("red_blue red", add_special_tokens=False)["input_ids"]
    assert database.find_at(tokens, 0)[0].name == "red_blue"
    assert database.find_at(tokens, len(tokens) - 1)[0].name == "red"


def test_ti_hashes_name_the_embeddings_a_prompt_used_with_their_file_hashes(model, tmp_path):
    """A1111's "TI hashes": prompt's embeddings first (any text of its edit schedule), then the negative's."""
    import hashlib

    width = model.text_encoder.config.hidden_size
    database = EmbeddingDatabase(model.tokenizer, width)
    for name, seed in (("red", 1), ("blue", 2), ("circle", 3)):
        path = tmp_path / f"{name}.safetensors"
        save_file({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(seed))}, path)
        database.add(load_embedding(path))
    short = {
        n: hashlib.sha256((tmp_path / f"{n}.safetensors").read_bytes()).hexdigest()[:10]
        for n in database.embeddings
    }
    value = ti_hashes(model.tokenizer, "a star [blue:red:0.5]", "circle, blue", database, steps=20)
    assert value == f"blue: {short['blue']}, red: {short['red']}, circle: {short['circle']}"
    assert ti_hashes(model.tokenizer, "a star", "", database, steps=20) is None
    assert ti_hashes(model.tokenizer, "red", "", None, steps=20) is None


class _Exploit:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_bad_embedding_files_are_refused_with_a_reason(model, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"string_to_param": {"*": _Exploit()}}))
    with pytest.raises(EmbeddingError, match=r"evil\.pt.*refused"):
        load_embedding(evil)
    two = tmp_path / "two.safetensors"
    save_file({"clip_l": torch.zeros(1, 8), "clip_g": torch.zeros(1, 16)}, two)
    with pytest.raises(EmbeddingError, match="2 tensors"):
        load_embedding(two)
    wide = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(2, 768)}, wide)
    database = EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
    skipped = database.load_folder(tmp_path)
    assert len(skipped) == 3 and any("width 768" in s for s in skipped) and not database.embeddings


def test_plain_token_chunks_still_encode(model):
    ids = tokenize_chunks(model.tokenizer, "a red circle")
    with torch.no_grad():
        from_ids = encode_chunks(model.text_encoder, ids)
        from_prompt = encode_prompt(model.text_encoder, model.tokenizer, "a red circle")
    assert torch.equal(from_ids, from_prompt)
