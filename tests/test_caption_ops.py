"""kohya's caption options, each by its effect over many draws (train/caption_ops.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from data.captions import split_tags
from train.caption_ops import CaptionOptions, process_caption

CAPTION = "sls, 1girl, red hair, smile, blue eyes, outdoors, hat"


def captions(options: CaptionOptions, caption: str = CAPTION, epoch: int = 1, draws: int = 200) -> list[str]:
    return [process_caption(caption, options, epoch, random.Random(seed)) for seed in range(draws)]


def test_shuffle_keeps_the_first_keep_tokens_in_place_and_moves_the_rest():
    out = [split_tags(c) for c in captions(CaptionOptions(shuffle_caption=True, keep_tokens=2))]
    assert all(tags[:2] == ["sls", "1girl"] and sorted(tags) == sorted(split_tags(CAPTION)) for tags in out)
    assert len({tuple(tags) for tags in out}) > 50


def test_keep_tokens_separator_keeps_its_head_and_tail_in_place_over_200_shuffles():
    caption = "sls, 1girl ||| red hair, smile, blue eyes, outdoors ||| masterpiece, best quality"
    options = CaptionOptions(shuffle_caption=True, keep_tokens_separator="|||")
    out = [split_tags(c) for c in captions(options, caption)]
    assert all(tags[:2] == ["sls", "1girl"] and tags[-2:] == ["masterpiece", "best quality"] for tags in out)
    middles = {tuple(tags[2:-2]) for tags in out}
    assert len(middles) == 24 and all(
        sorted(m) == ["blue eyes", "outdoors", "red hair", "smile"] for m in middles
    )
    assert all("|||" not in c for c in captions(CaptionOptions(keep_tokens_separator="|||"), caption))


def test_tag_dropout_drops_its_share_of_the_free_tags_only():
    caption = ", ".join(["sls"] + [f"tag{i}" for i in range(100)])
    out = captions(CaptionOptions(caption_tag_dropout_rate=0.3, keep_tokens=1), caption, draws=10)
    kept = [split_tags(c) for c in out]
    assert all(tags[0] == "sls" for tags in kept)
    dropped = sum(100 - (len(tags) - 1) for tags in kept)  # 1,000 free tags in all
    assert 250 <= dropped <= 350


def test_dropout_every_3_epochs_empties_captions_in_epochs_3_6_9_only():
    options = CaptionOptions(caption_dropout_every_n_epochs=3)
    empty_epochs = [e for e in range(1, 11) if all(c == "" for c in captions(options, epoch=e, draws=20))]
    assert empty_epochs == [3, 6, 9]
    assert all(c == CAPTION for e in (1, 2, 4, 10) for c in captions(options, epoch=e, draws=20))


def test_caption_dropout_rate_empties_its_share():
    out = captions(CaptionOptions(caption_dropout_rate=0.25), draws=4000)
    assert 850 < out.count("") < 1150


def test_prefix_suffix_and_secondary_separator():
    options = CaptionOptions(caption_prefix="sls", caption_suffix="best quality", secondary_separator=";;;")
    assert (
        process_caption("red;;;hair, smile", options, 1, random.Random(0))
        == "sls red, hair, smile best quality"
    )
    # a secondary separator keeps its parts together through a shuffle, then becomes ", "
    shuffled = captions(CaptionOptions(shuffle_caption=True, secondary_separator=";;;"), "a;;;b, c, d, e")
    assert all("a, b" in c for c in shuffled) and len(set(shuffled)) == 24


def test_wildcards_pick_one_choice_and_one_line_per_sample():
    options = CaptionOptions(enable_wildcard=True)
    out = Counter(captions(options, "a {red|blue|green} star, {small|large}", draws=600))
    assert set(out) == {f"a {c} star, {s}" for c in ("red", "blue", "green") for s in ("small", "large")}
    assert min(out.values()) > 60
    lines = Counter(captions(options, "first line\nsecond line", draws=200))
    assert set(lines) == {"first line", "second line"}
    assert captions(CaptionOptions(), "first line\nsecond line", draws=1) == ["first line"]  # without: line 1


def test_a_seed_gives_the_same_caption():
    options = CaptionOptions(shuffle_caption=True, caption_tag_dropout_rate=0.2, enable_wildcard=True)
    assert captions(options, draws=50) == captions(options, draws=50)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.caption_tag_dropout_rate=0.2", "caption_tag_dropout_rate=0.2"),
        ("dataset.caption_dropout_every_n_epochs=3", "caption_dropout_every_n_epochs=3"),
        ("dataset.enable_wildcard=true", "enable_wildcard=true"),
    ],
)
def test_random_captions_cannot_have_cached_text_encoder_outputs(compose_config, override, message):
    from train.errors import ConfigError

    overrides = [
        "dataset.train_dir=x",
        "dataset.cache_text_encoder_outputs=true",
        "network.train_text_encoder=false",
    ]
    with pytest.raises(ConfigError, match=message):
        compose_config(*overrides, override)
