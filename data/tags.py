"""Declarative tag processing of comma-separated captions: synonyms, merges, removal, dedupe, ordering."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from data.captions import split_tags
from data.errors import LoraSmithError

__all__ = ["TagRules", "apply_rules", "join_tags", "normalize_tag", "split_tags", "tag_frequencies"]

_SPACES = re.compile(r"\s+")
# Like kohya's tagger, tags this short keep their underscores: they are kaomoji (`^_^`, `o_o`, `>_<`).
_KAOMOJI_MAX_LEN = 3


def normalize_tag(tag: str) -> str:
    r"""The key tags are compared by: case-folded, `_` as space, `\(` as `(`, whitespace collapsed."""
    text = tag.replace("_", " ").replace("\\(", "(").replace("\\)", ")")
    return _SPACES.sub(" ", text).strip().casefold()


def join_tags(tags: Iterable[str]) -> str:
    """Tags joined with `, `, the form taggers write and kohya's shuffle splits."""
    return ", ".join(tags)


def _spaced(tag: str) -> str:
    return tag if len(tag) <= _KAOMOJI_MAX_LEN else tag.replace("_", " ")


@dataclass(frozen=True)
class TagRules:
    """What `apply_rules` does to a caption. Rule tags match caption tags by `normalize_tag`.

    merge: trigger → tags it stands for; synonyms: tag → canonical tag (one step, applied first);
    class_word: put right after the triggers; keep_first: tags moved to the front (kohya's keep_tokens).
    """

    merge: dict[str, list[str]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)
    dedupe: bool = True
    class_word: str | None = None
    underscores_to_spaces: bool = True
    keep_first: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for trigger, group in self.merge.items():
            _check_tag(trigger, "a merge trigger")
            _check_list(group, f"merge[{trigger!r}]")
            if not group:
                raise LoraSmithError(
                    f"merge[{trigger!r}] is empty: list the tags `{trigger}` replaces, e.g. [1boy, facial hair]"
                )
        _check_list(self.remove, "remove")
        _check_list(self.keep_first, "keep_first")
        for tag, canonical in self.synonyms.items():
            _check_tag(tag, "a synonyms key")
            _check_tag(canonical, f"synonyms[{tag!r}]")
        if self.class_word is not None:
            _check_tag(self.class_word, "class_word")


def _check_tag(tag: object, where: str) -> None:
    if not isinstance(tag, str) or not tag.strip():
        raise LoraSmithError(f"tag rules: {where} is {tag!r}; it must be a non-empty tag")
    if "," in tag:
        parts = ", ".join(part.strip() for part in tag.split(",") if part.strip())
        raise LoraSmithError(
            f"tag rules: {where} `{tag}` holds a comma, so it can never match one tag: "
            f"write it as a list, [{parts}]"
        )


def _check_list(tags: Iterable[str], where: str) -> None:
    # A bare string is iterable too, and would silently become a list of single characters.
    if isinstance(tags, str):
        raise LoraSmithError(f"tag rules: {where} is the string `{tags}`; write it as a list, [{tags}]")
    for tag in tags:
        _check_tag(tag, f"an entry of {where}")


def _canonical_keys(synonyms: Mapping[str, str]) -> dict[str, str]:
    return {normalize_tag(tag): normalize_tag(canonical) for tag, canonical in synonyms.items()}


def _apply_synonyms(tags: list[str], rules: TagRules) -> list[str]:
    replacements = {normalize_tag(tag): canonical.strip() for tag, canonical in rules.synonyms.items()}
    if rules.underscores_to_spaces:
        replacements = {key: _spaced(canonical) for key, canonical in replacements.items()}
    return [replacements.get(normalize_tag(tag), tag) for tag in tags]


def _apply_merges(
    tags: list[str], merge: Mapping[str, list[str]], canon: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Groups in `merge` order: a group whose tags are all present is cut out and its trigger returned."""
    triggers = []
    for trigger, group in merge.items():
        wanted = {canon.get(key, key) for key in map(normalize_tag, group)}
        if wanted <= {normalize_tag(tag) for tag in tags}:
            tags = [tag for tag in tags if normalize_tag(tag) not in wanted]
            triggers.append(trigger.strip())
    return tags, triggers


def _dedupe(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for tag in tags:
        key = normalize_tag(tag)
        if key not in seen:
            seen.add(key)
            kept.append(tag)
    return kept


def _to_front(tags: list[str], first: list[str], canon: dict[str, str]) -> list[str]:
    rank: dict[str, int] = {}
    for index, key in enumerate(map(normalize_tag, first)):
        rank.setdefault(canon.get(key, key), index)
    front = sorted((tag for tag in tags if normalize_tag(tag) in rank), key=lambda t: rank[normalize_tag(t)])
    return front + [tag for tag in tags if normalize_tag(tag) not in rank]


def apply_rules(caption: str, rules: TagRules) -> str:
    """Rewrite `caption` by `rules`; the result is `triggers, class_word, keep_first tags, the rest`.

    Steps, in order: underscores to spaces, synonyms, merges, removal, dedupe, ordering. Tags not touched
    by a rule keep their order and spelling (`pokemon \\(creature\\)` stays escaped). Rules name tags in
    any spelling; synonyms apply to them too, so `merge` and `remove` may use either form.

    A merge fires only when *all* of its tags are present: they are removed and the trigger goes first
    (the tutorial's `1boy, ..., facial hair` → `Smith, ...`). With only some present, the caption is left
    as it is. A subset such as `1boy` alone says "a man", not "Smith": firing on it would name every man
    in the set Smith and teach the trigger the class instead of the character, the concept bleed a
    trigger exists to avoid; and removing the present tags without the trigger would lose true tags.
    To put a trigger on every caption of a folder regardless of tags, use the folder name
    (`10_Smith 1boy`) or `class_word`, and `remove` for tags to drop everywhere.
    """
    tags = split_tags(caption)
    if rules.underscores_to_spaces:
        tags = [_spaced(tag) for tag in tags]
    canon = _canonical_keys(rules.synonyms)
    tags = _apply_synonyms(tags, rules)
    tags, triggers = _apply_merges(tags, rules.merge, canon)
    removed = {canon.get(key, key) for key in map(normalize_tag, rules.remove)}
    tags = [tag for tag in tags if normalize_tag(tag) not in removed]
    if rules.dedupe:
        tags = _dedupe(tags)
    # The head is never duplicated: a trigger or class word already in the caption moves to the front.
    head = _dedupe(triggers + ([rules.class_word.strip()] if rules.class_word else []))
    head_keys = {normalize_tag(tag) for tag in head}
    tags = [tag for tag in tags if normalize_tag(tag) not in head_keys]
    return join_tags(head + _to_front(tags, rules.keep_first, canon))


def tag_frequencies(captions: Iterable[str]) -> Counter[str]:
    """In how many captions each tag occurs; spellings that compare equal count as one, under the first seen."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for caption in captions:
        seen: set[str] = set()
        for tag in split_tags(caption):
            key = normalize_tag(tag)
            if key not in seen:
                seen.add(key)
                counts[spelling.setdefault(key, tag)] += 1
    return counts
