"""max_token_length and weighted captions: captions reach the text encoder chunked as the engine chunks prompts."""

import pytest
import torch

from inference.models.loading import load_base_model
from inference.text_encoding import encode_prompt
from train.caption_tokens import caption_tokens
from train.config import ModelConfig
from train.step import encode_text


@pytest.fixture(scope="module")
def toy():
    bundle = load_base_model(ModelConfig(kind="toy"))
    bundle.freeze()
    return bundle


def long_caption(tokenizer, tokens: int) -> str:
    words = ["red", "blue", "green", "circle", "square"]
    caption = ", ".join(words[i % len(words)] for i in range(tokens // 2))
    assert 75 < len(tokenizer(caption, add_special_tokens=False).input_ids) <= 150
    return caption


def test_a_150_token_caption_reaches_the_text_encoder_as_two_chunks(toy):
    caption = long_caption(toy.tokenizer, 120)
    seen = []
    hook = toy.text_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    try:
        ids = caption_tokens(toy.tokenizer, caption, max_token_length=150).ids
        states = encode_text(toy.text_encoder, ids[None])
    finally:
        hook.remove()
    assert seen == [torch.Size([2, 77])]  # two chunks of BOS + 75 + EOS, each encoded on its own
    assert states.shape[:2] == (1, 154)
    assert ids[0] == toy.tokenizer.bos_token_id and ids[77] == toy.tokenizer.bos_token_id
    # The engine renders the same caption from the same conditioning
    assert torch.allclose(states, encode_prompt(toy.text_encoder, toy.tokenizer, caption), atol=1e-5)
    one = caption_tokens(toy.tokenizer, caption, max_token_length=75).ids
    assert one.shape == (77,) and torch.equal(one, ids[:77])  # 75: the second chunk is cut off


def test_a_short_caption_is_padded_with_empty_chunks(toy):
    ids = caption_tokens(toy.tokenizer, "red circle", max_token_length=225).ids
    empty = caption_tokens(toy.tokenizer, "", max_token_length=75).ids
    assert ids.shape == (231,) and torch.equal(ids[77:154], empty) and torch.equal(ids[154:], empty)


def test_weighted_captions_weigh_tags_as_the_engine_does(toy):
    caption = "(red circle:1.5), [blue] square"
    weighted = caption_tokens(toy.tokenizer, caption, weighted=True)
    plain = caption_tokens(toy.tokenizer, caption, weighted=False)
    assert weighted.weights is not None and plain.weights is None
    assert {round(w, 4) for w in weighted.weights.tolist()} == {1.0, 1.5, round(1 / 1.1, 4)}
    assert not torch.equal(weighted.ids, plain.ids)  # unweighted, brackets are plain text
    states = encode_text(toy.text_encoder, weighted.ids[None], 1, weighted.weights[None])
    assert torch.allclose(states, encode_prompt(toy.text_encoder, toy.tokenizer, caption), atol=1e-5)
    unweighted = encode_text(toy.text_encoder, weighted.ids[None])
    assert not torch.allclose(states, unweighted, atol=1e-4)
