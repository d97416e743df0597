"""Tag rules on comma-separated captions: the tutorial's merge, matching, removal, ordering, validation."""

from __future__ import annotations

from collections import Counter

import pytest

from data.errors import LoraSmithError
from data.tags import TagRules, apply_rules, join_tags, normalize_tag, split_tags, tag_frequencies

SMITH_TAGGED = (
    "1boy, cooking, frying pan, male focus, solo, gloves, apron, fire, brown footwear, black gloves, boots, "
    "stove, kitchen, holding, facial hair, bandana, blue shirt, shirt"
)
SMITH_MERGED = (
    "Smith, cooking, frying pan, male focus, solo, gloves, apron, fire, brown footwear, black gloves, boots, "
    "stove, kitchen, holding, bandana, blue shirt, shirt"
)
SMITH_GROUP = {"Smith": ["1boy", "facial hair"]}


def test_tutorial_smith_merge() -> None:
    assert apply_rules(SMITH_TAGGED, TagRules(merge=SMITH_GROUP)) == SMITH_MERGED


def test_merge_matches_ignoring_case_spacing_and_underscores() -> None:
    rules = TagRules(merge={"Smith": [" Facial_Hair ", "1BOY"]})
    raw = SMITH_TAGGED.replace("facial hair", "facial_hair").replace("1boy", " 1boy  ")
    assert apply_rules(raw, rules) == SMITH_MERGED


def test_partial_merge_leaves_caption_alone() -> None:
    without_beard = SMITH_TAGGED.replace(", facial hair", "")
    assert apply_rules(without_beard, TagRules(merge=SMITH_GROUP)) == without_beard


def test_merge_moves_a_trigger_already_in_the_caption() -> None:
    caption = "cooking, Smith, 1boy, facial hair, smith"
    assert apply_rules(caption, TagRules(merge=SMITH_GROUP)) == "Smith, cooking"


def test_merge_groups_fire_in_order_and_consume_their_tags() -> None:
    rules = TagRules(merge={"Smith": ["1boy", "facial hair"], "Beard": ["facial hair"], "Cook": ["apron"]})
    assert apply_rules("1boy, apron, facial hair, fire", rules) == "Smith, Cook, fire"
    assert apply_rules("apron, facial hair, fire", rules) == "Beard, Cook, fire"


def test_underscores_become_spaces_except_in_kaomoji() -> None:
    caption = r"black_gloves, ^_^, o_o, pokemon_\(creature\), blue_shirt"
    assert apply_rules(caption, TagRules()) == r"black gloves, ^_^, o_o, pokemon \(creature\), blue shirt"
    assert apply_rules(caption, TagRules(underscores_to_spaces=False)) == caption


def test_escaped_parentheses_kept_and_matched() -> None:
    caption = r"1girl, pokemon \(creature\), smile, pikachu \(cosplay\)"
    assert apply_rules(caption, TagRules()) == caption
    assert (
        apply_rules(caption, TagRules(remove=["pokemon (creature)"])) == r"1girl, smile, pikachu \(cosplay\)"
    )
    merged = apply_rules(caption, TagRules(merge={"pika": [r"pikachu_\(cosplay\)", "1girl"]}))
    assert merged == r"pika, pokemon \(creature\), smile"


def test_remove_is_a_blacklist() -> None:
    rules = TagRules(remove=["solo", "Male_Focus", "not there"])
    assert apply_rules("1boy, male focus, solo, fire", rules) == "1boy, fire"


def test_merge_runs_before_remove() -> None:
    rules = TagRules(merge={"Smith": ["1boy", "solo"]}, remove=["solo"])
    assert apply_rules("1boy, solo, fire", rules) == "Smith, fire"


def test_synonyms_map_to_the_canonical_tag_and_feed_the_rules() -> None:
    rules = TagRules(synonyms={"beard": "facial_hair", "Man": "1boy"})
    assert apply_rules("man, beard, fire", rules) == "1boy, facial hair, fire"
    merged = TagRules(synonyms={"beard": "facial hair"}, merge={"Smith": ["1boy", "beard"]}, remove=["beard"])
    assert apply_rules("1boy, beard, fire", merged) == "Smith, fire"
    assert apply_rules("beard, fire", merged) == "fire"


def test_dedupe_keeps_the_first_spelling() -> None:
    caption = "smile, Smile, long_hair, long hair, smile"
    assert apply_rules(caption, TagRules()) == "smile, long hair"
    assert apply_rules(caption, TagRules(dedupe=False)) == "smile, Smile, long hair, long hair, smile"


def test_class_word_follows_the_triggers() -> None:
    rules = TagRules(merge=SMITH_GROUP, class_word="man")
    assert apply_rules("1boy, facial hair, fire", rules) == "Smith, man, fire"
    assert apply_rules("1boy, fire, man", rules) == "man, 1boy, fire"
    assert apply_rules("", rules) == "man"


def test_keep_first_orders_the_front_for_keep_tokens() -> None:
    rules = TagRules(merge=SMITH_GROUP, class_word="man", keep_first=["solo", "male_focus", "absent"])
    expected = (
        "Smith, man, solo, male focus, cooking, frying pan, gloves, apron, fire, brown footwear, black gloves, "
        "boots, stove, kitchen, holding, bandana, blue shirt, shirt"
    )
    assert apply_rules(SMITH_TAGGED, rules) == expected


def test_empty_and_blank_tags() -> None:
    assert apply_rules("", TagRules()) == ""
    assert apply_rules(" , a,, b ,", TagRules()) == "a, b"


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"merge": {"Smith": ["1boy, facial hair"]}}, "[1boy, facial hair]"),
        ({"merge": {"Smith": "1boy"}}, "write it as a list, [1boy]"),
        ({"merge": {"Smith": []}}, "is empty"),
        ({"merge": {" ": ["1boy"]}}, "non-empty tag"),
        ({"remove": "solo"}, "write it as a list, [solo]"),
        ({"keep_first": ["solo", ""]}, "non-empty tag"),
        ({"synonyms": {"a, b": "c"}}, "holds a comma"),
        ({"class_word": ""}, "non-empty tag"),
    ],
)
def test_bad_rules_are_rejected_with_the_fix(kwargs: dict, hint: str) -> None:
    with pytest.raises(LoraSmithError, match=hint.replace("[", r"\[").replace("]", r"\]")):
        TagRules(**kwargs)


def test_normalize_split_join() -> None:
    assert normalize_tag(r"  Pokemon_\(Creature\)  ") == "pokemon (creature)"
    assert normalize_tag("long   Hair") == "long hair"
    assert split_tags(" a ,b,, c d ,") == ["a", "b", "c d"]
    assert join_tags(["a", "b c"]) == "a, b c"
    assert join_tags(split_tags(SMITH_TAGGED)) == SMITH_TAGGED


def test_tag_frequencies_count_captions_and_merge_spellings() -> None:
    captions = ["1boy, smile, Smile", "1boy, long_hair", "long hair, 1boy", ""]
    counts = tag_frequencies(captions)
    assert counts == Counter({"1boy": 3, "long_hair": 2, "smile": 1})
    assert counts.most_common(1) == [("1boy", 3)]
    assert tag_frequencies([]) == Counter()
