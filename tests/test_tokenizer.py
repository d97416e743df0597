"""The locally written CLIP tokenizer: listed words are single tokens, anything else still tokenizes."""

from __future__ import annotations

import re

from inference.models.tokenizer import WORDS, build_tokenizer


def test_every_listed_word_is_one_token_and_round_trips(tmp_path):
    tokenizer = build_tokenizer(tmp_path)
    # CLIP's pre-tokenizer splits digits from letters (`1girl` → `1`, `girl`), as in the real vocabulary.
    words = [w for w in WORDS if not re.search(r"\d", w)]
    split = [w for w in words if tokenizer.tokenize(w) != [f"{w}</w>"]]
    assert not split  # BPE applies low-ranked merges first: a naive merge list splits long words
    ids = tokenizer("sls star, chk style, masterpiece").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "sls star , chk style , masterpiece"
    assert len(tokenizer.tokenize("zqxv")) > 1  # unknown words fall back to smaller pieces, never fail
