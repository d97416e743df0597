"""Captions of textual-inversion training: the token string's n placeholder tokens, and the object/style templates.

The token string is found in a caption the way A1111 finds an embedding's name in a prompt: by its token ids
(the tokenizer's reading of the name), so what trains is exactly what a prompt later places. Each match
becomes the n placeholder ids (kohya's `token token1 token2 …`), one per trained vector.

`template=object|style` trains on the textual-inversion paper's ImageNet templates instead of the captions
(kohya --use_object_template / --use_style_template, A1111's subject.txt / style.txt), each sample drawing
one from its own seeded stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from train.caption_ops import with_prefix_and_suffix
from train.config import TrainConfig
from train.errors import ConfigError

MAX_TOKENS = 77  # CLIP's context: BOS + 75 tokens + EOS

# The paper's small ImageNet template lists, as kohya trains with them ({} = the token string).
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)  # fmt: skip
STYLE_TEMPLATES = (
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}",
    "a dirty painting in the style of {}", "a dark painting in the style of {}", "a picture in the style of {}",
    "a cool painting in the style of {}", "a close-up painting in the style of {}",
    "a bright painting in the style of {}", "a cropped painting in the style of {}",
    "a good painting in the style of {}", "a close-up painting in the style of {}",
    "a rendition in the style of {}", "a nice painting in the style of {}", "a small painting in the style of {}",
    "a weird painting in the style of {}", "a large painting in the style of {}",
)  # fmt: skip
TEMPLATES = {"none": (), "object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def caption_templates(cfg: TrainConfig) -> tuple[str, ...]:
    """The captions `network.template` trains on, filled with the token string; () = the dataset's own."""
    if cfg.network.module != "embedding":
        return ()
    return tuple(
        template.format(cfg.network.token_string or cfg.name) for template in TEMPLATES[cfg.network.template]
    )


def mentions(caption: str, token: str) -> bool:
    """Whether `token` stands in `caption` as its own word(s), case-insensitively (CLIP lowercases)."""
    return re.search(rf"(?<![\w]){re.escape(token)}(?![\w])", caption, re.IGNORECASE) is not None


def check_captions_mention(captions: Iterable[str], token: str) -> None:
    """Refuse a run whose captions never name the trigger: its vectors would get no gradient at all."""
    if not any(mentions(caption, token) for caption in captions):
        raise ConfigError(
            f"no training caption contains the token string `{token}`, so the embedding would never train: "
            f"write `{token}` into the captions (or dataset.caption_prefix={token}), set network.token_string "
            "and name to the trigger the captions use, or train on templates (network.template=object|style)"
        )


def expand(ids: list[int], trigger: list[int], placeholders: list[int]) -> list[int]:
    """`ids` with every run of `trigger` replaced by `placeholders` (left to right, not overlapping)."""
    out: list[int] = []
    i, n = 0, len(trigger)
    while i < len(ids):
        if ids[i : i + n] == trigger:
            out += placeholders
            i += n
        else:
            out.append(ids[i])
            i += 1
    return out


class PlaceholderTokenizer:
    """Caption → 77 token ids in which the trigger's tokens are replaced by the n placeholder ids.

    Without the trigger the ids equal the tokenizer's own padded, truncated ones (BOS, 75 tokens, EOS, pad).
    """

    def __init__(self, tokenizer, token: str, placeholders: list[int]) -> None:
        self.tokenizer = tokenizer
        self.trigger = tokenizer(token, add_special_tokens=False).input_ids
        if not self.trigger:
            raise ConfigError(f"network.token_string={token!r} gives no tokens: give a word")
        self.placeholders = placeholders

    def __call__(self, caption: str) -> torch.Tensor:
        """LongTensor (77,)."""
        t = self.tokenizer
        ids = expand(
            t(caption, add_special_tokens=False, verbose=False).input_ids, self.trigger, self.placeholders
        )
        ids = [t.bos_token_id, *ids[: MAX_TOKENS - 2], t.eos_token_id]
        pad = t.pad_token_id if t.pad_token_id is not None else t.eos_token_id
        return torch.tensor(ids + [pad] * (MAX_TOKENS - len(ids)), dtype=torch.long)


def check_trigger_in_captions(cfg: TrainConfig, captions: list[str]) -> None:
    """network=embedding without templates: some caption (with prefix and suffix) must name the trigger."""
    if cfg.network.module != "embedding" or cfg.network.template != "none":
        return
    d = cfg.dataset
    texts = [with_prefix_and_suffix(caption, d.caption_prefix, d.caption_suffix) for caption in captions]
    check_captions_mention(texts, cfg.network.token_string or cfg.name)
