"""The WD14 tag list (`selected_tags.csv`) and which tags a picture's scores select.

Rules follow kohya's tag_images_by_wd14_tagger: a score at or above its category's threshold selects the
tag (`>=`, compared in float32, the model's precision, so a score printed as 0.35 passes a 0.35 threshold);
tags keep the model's order (generals, then characters, as the file lists them); the rating, when asked
for, is the single highest-scoring one and comes first. Tags of 3 characters or fewer keep underscores:
they are kaomoji (`^_^`, `>_<`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.base import CaptionerError
from data.tags import join_tags, normalize_tag

GENERAL, CHARACTER, RATING = 0, 4, 9
_KAOMOJI_MAX_LEN = 3


@dataclass(frozen=True)
class TagLabels:
    """Tag names and their categories, in the order of the model's output scores."""

    names: list[str]
    categories: np.ndarray  # (T,) int: 0 general, 4 character, 9 rating


def load_labels(path: Path) -> TagLabels:
    """Read `selected_tags.csv` (columns tag_id,name,category,count); CaptionerError naming the file."""
    with open(path, encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if "name" not in header or "category" not in header:
        raise CaptionerError(
            f"{path} has columns {header}, not tag_id,name,category,count: use the selected_tags.csv that "
            f"came with the model"
        )
    name_col, category_col = header.index("name"), header.index("category")
    names, categories = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            names.append(row[name_col])
            categories.append(int(row[category_col]))
        except (IndexError, ValueError):
            raise CaptionerError(
                f"{path}, line {line}: expected tag_id,name,category,count, got {row}"
            ) from None
    return TagLabels(names, np.array(categories, dtype=np.int64))


def select_tags(
    scores: np.ndarray,
    labels: TagLabels,
    general_threshold: float,
    character_threshold: float,
    include_ratings: bool = False,
    character_tags_first: bool = False,
) -> list[str]:
    """Names of the tags that `scores` (T,) select, in output order (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float32)
    general = (labels.categories == GENERAL) & (scores >= np.float32(general_threshold))
    character = (labels.categories == CHARACTER) & (scores >= np.float32(character_threshold))
    if character_tags_first:
        chosen = list(np.flatnonzero(character)) + list(np.flatnonzero(general))
    else:
        chosen = list(np.flatnonzero(general | character))
    tags = [labels.names[i] for i in chosen]
    ratings = np.flatnonzero(labels.categories == RATING)
    if include_ratings and ratings.size:
        tags.insert(0, labels.names[ratings[np.argmax(scores[ratings])]])
    return tags


def display_name(tag: str, underscores_to_spaces: bool) -> str:
    """The tag as written in a caption: `long_hair` → `long hair`, kaomoji such as `^_^` unchanged."""
    if underscores_to_spaces and len(tag) > _KAOMOJI_MAX_LEN:
        return tag.replace("_", " ")
    return tag


def tag_text(tags: Iterable[str], underscores_to_spaces: bool, exclude: Iterable[str] = ()) -> str:
    """Tags joined with `, `, leaving out `exclude` (matched with or without underscores, any case)."""
    excluded = {normalize_tag(tag) for tag in exclude}
    kept = [display_name(tag, underscores_to_spaces) for tag in tags if normalize_tag(tag) not in excluded]
    return join_tags(kept)
