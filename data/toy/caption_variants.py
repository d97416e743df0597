"""Varied captions of one base-world scene, as real training captions vary, for the toy base model.

Real captions come in any tag order and leave attributes out. A base model trained on one fixed template
learns positions instead of words: it reads the first tag as the colour whatever it says, so a trigger
word in front (`sls star`) takes the colour's place. Trained on these variants, the toy model reads words
wherever they stand.

Only the scene's own words appear. A build that also mixed in filler words (`best quality`, `a picture
of`), meant to make the model shrug off unknown words, made LoRAs learn trigger words more slowly: the
default `char_lora` reached concept_score 0.29 at weight 1 on it instead of 0.45 (600 steps each).
"""

from __future__ import annotations

import numpy as np

from data.toy.world import Scene

KEEP_BACKGROUND = 0.9  # a caption keeps its background with this probability
KEEP_SIZE = 0.8  # ... and its size
SHUFFLE = 0.5  # tag order shuffled (kohya's shuffle_caption) with this probability


def tag_variant(scene: Scene, rng: np.random.Generator) -> str:
    """`red circle, blue background, small`, with background or size left out and the tags shuffled."""
    tags = [f"{scene.color} {scene.shape}"]
    if rng.random() < KEEP_BACKGROUND:
        tags.append(f"{scene.background} background")
    if rng.random() < KEEP_SIZE:
        tags.append(scene.size)
    if rng.random() < SHUFFLE:
        tags = [tags[i] for i in rng.permutation(len(tags))]
    return ", ".join(tags)


def sentence_variant(scene: Scene, rng: np.random.Generator) -> str:
    """`a small red circle on a blue background`, with or without its size."""
    size = f"{scene.size} " if rng.random() < KEEP_SIZE else ""
    return f"a {size}{scene.color} {scene.shape} on a {scene.background} background"


def caption_variants(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions of `scene`: the first half tag style, the rest sentences."""
    half = (count + 1) // 2
    return [tag_variant(scene, rng) for _ in range(half)] + [
        sentence_variant(scene, rng) for _ in range(count - half)
    ]
