"""What happens to a caption on its way to the text encoder, in kohya's order, one small function per option.

caption dropout (a rate, or every N-th epoch) → one random line and wildcards `{a|b|c}` (or only the first
line without wildcards) → prefix / suffix → fixed and free tags (keep_tokens, or keep_tokens_separator
`|||`, whose text after a second separator stays at the end) → shuffle and tag dropout of the free tags →
secondary separator → text, or, with textual inversion's templates, one template in its place (kohya replaces
the processed caption last). Every random choice comes from the sample's own `random.Random`, so a
(seed, epoch, sample) gives the same caption in any process and after a resume.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from data.captions import split_tags

WILDCARD = re.compile(r"\{([^{}]*\|[^{}]*)\}")  # {a|b|c}: at least one bar, no nested braces


@dataclass(frozen=True)
class CaptionOptions:
    """The caption settings of `DatasetConfig`, in kohya's names."""

    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str = ""
    caption_suffix: str = ""
    secondary_separator: str = ""
    enable_wildcard: bool = False
    templates: tuple[str, ...] = ()  # network.template: filled templates that replace every kept caption

    @property
    def random_settings(self) -> list[str]:
        """The settings that make a caption differ between epochs or samples (then it cannot be cached)."""
        keys = ("shuffle_caption", "caption_dropout_rate", "caption_dropout_every_n_epochs")
        keys += ("caption_tag_dropout_rate", "enable_wildcard")
        values = {key: getattr(self, key) for key in keys}
        settings = [
            f"dataset.{key}={str(v).lower() if isinstance(v, bool) else v}" for key, v in values.items() if v
        ]
        return settings + ([f"network.template ({len(self.templates)} captions)"] if self.templates else [])


def caption_options(config: Any, templates: tuple[str, ...] = ()) -> CaptionOptions:
    """The caption options of a DatasetConfig (any object with those attributes), plus filled templates."""
    names = [name for name in CaptionOptions.__dataclass_fields__ if name != "templates"]
    return CaptionOptions(**{name: getattr(config, name) for name in names}, templates=templates)


def from_template(templates: tuple[str, ...], rng: random.Random) -> str:
    """kohya's --use_object_template / --use_style_template: one of the filled templates, at random."""
    return rng.choice(templates)


def with_prefix_and_suffix(caption: str, prefix: str, suffix: str) -> str:
    """kohya's --caption_prefix / --caption_suffix, joined with a space."""
    if prefix:
        caption = f"{prefix} {caption}"
    if suffix:
        caption = f"{caption} {suffix}"
    return caption


def is_dropped(options: CaptionOptions, epoch: int, rng: random.Random) -> bool:
    """Caption dropout: with probability caption_dropout_rate, and in every N-th epoch (epochs count from 1:
    N = 3 empties epochs 3, 6, 9). The rate's draw is always made, so other options keep their draws."""
    by_rate = rng.random() < options.caption_dropout_rate
    every = options.caption_dropout_every_n_epochs
    return by_rate or (every > 0 and epoch % every == 0)


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """One random line of a multi-line caption, then each `{a|b|c}` replaced by one of its choices."""
    lines = [line for line in caption.split("\n") if line.strip()]
    line = rng.choice(lines) if len(lines) > 1 else (lines[0] if lines else "")
    return WILDCARD.sub(lambda match: rng.choice(match.group(1).split("|")), line)


def split_fixed(caption: str, options: CaptionOptions) -> tuple[list[str], list[str], list[str]]:
    """(fixed head, free tags, fixed tail). With keep_tokens_separator in the caption, the text before it is
    the head and the text after a second one the tail; otherwise the first keep_tokens tags are the head."""
    separator = options.keep_tokens_separator
    if separator and separator in caption:
        head, rest = caption.split(separator, 1)
        rest, tail = rest.split(separator, 1) if separator in rest else (rest, "")
        return split_tags(head), split_tags(rest), split_tags(tail)
    tags = split_tags(caption)
    keep = max(options.keep_tokens, 0)
    return tags[:keep], tags[keep:], []


def drop_tags(tags: list[str], rate: float, rng: random.Random) -> list[str]:
    """kohya's --caption_tag_dropout_rate: each free tag left out with this probability."""
    if rate <= 0:
        return tags
    return [tag for tag in tags if rng.random() >= rate]


def process_caption(caption: str, options: CaptionOptions, epoch: int, rng: random.Random) -> str:
    """The caption a sample trains on in `epoch`."""
    if is_dropped(options, epoch, rng):
        return ""
    if options.enable_wildcard:
        caption = expand_wildcards(caption, rng)
    else:
        caption = caption.split("\n")[0]
    # After choosing the line (kohya adds them to the whole file, so only its first line got the prefix).
    caption = with_prefix_and_suffix(caption, options.caption_prefix, options.caption_suffix)
    if options.shuffle_caption or options.caption_tag_dropout_rate > 0 or options.keep_tokens_separator:
        head, free, tail = split_fixed(caption, options)
        if options.shuffle_caption:
            rng.shuffle(free)
        free = drop_tags(free, options.caption_tag_dropout_rate, rng)
        caption = ", ".join(head + free + tail)
    if options.secondary_separator:
        caption = caption.replace(options.secondary_separator, ", ")
    if options.templates:
        caption = from_template(options.templates, rng)
    return caption
