"""The dataset's captions as kohya reads them, and the summary of folders, counts and tags that the LoRA's
ss_* metadata records (train/dataset.py holds the samples)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from data.balance import RegPlan
from data.captions import read_caption, tag_frequency
from data.folders import Subset

log = logging.getLogger(__name__)


def read_captions(
    subsets: list[Subset], extensions: list[str], every_line: bool
) -> tuple[dict[Path, str], int]:
    """Caption of every image (its file, else its folder's class tokens) and how many had no file; warns
    once about the uncaptioned ones. `every_line` keeps every line of a file (kohya's enable_wildcard)."""
    captions: dict[Path, str] = {}
    missing = empty = 0
    example = ""
    for subset in subsets:
        for path in subset.images:
            text = read_caption(path, extensions, every_line=every_line)
            if text is None:
                missing += 1
                empty += not subset.class_tokens
                example = example or f"`{subset.name}` → '{subset.class_tokens}'"
                text = subset.class_tokens
            captions[path] = text
    if missing:
        tail = f"; {empty} of them have no class tokens either and train on an empty caption" if empty else ""
        log.warning(
            "%d of %d images have no caption file (%s), or an empty one: they train on their folder's class tokens "
            "(e.g. %s)%s",
            missing, len(captions), "/".join(extensions), example, tail,
        )  # fmt: skip
    return captions, missing


def _dirs(subsets: list[Subset]) -> dict[str, dict[str, int]]:
    return {s.name: {"n_repeats": s.repeats, "img_count": len(s.images)} for s in subsets}


def dataset_summary(
    train_subsets: list[Subset],
    reg_subsets: list[Subset],
    reg_plan: RegPlan,
    captions: dict[Path, str],
    num_samples: int,
    resolution: int,
    uncaptioned: int,
    bucket_facts: dict | None,
) -> dict[str, Any]:
    """Counts, folders and tag frequencies (kohya's ss_* keys): `num_samples` per epoch, reg ones included."""
    frequency: dict[str, dict[str, int]] = {}
    for subset in train_subsets + reg_subsets:
        merged = frequency.setdefault(subset.name, {})
        for tag, n in tag_frequency(captions[path] for path in subset.images).items():
            merged[tag] = merged.get(tag, 0) + n
    num_reg_samples = reg_plan.num_samples
    return {
        "num_train_images": sum(len(s.images) for s in train_subsets),
        "num_reg_images": sum(len(s.images) for s in reg_subsets),
        "num_samples_per_epoch": num_samples,
        "num_train_samples_per_epoch": num_samples - num_reg_samples,
        "num_reg_samples_per_epoch": num_reg_samples,
        "dataset_dirs": _dirs(train_subsets),
        "reg_dataset_dirs": _dirs(reg_subsets),
        "tag_frequency": frequency,
        "resolution": resolution,
        "unused_reg_images": reg_plan.unused,
        "num_images_without_caption": uncaptioned,
        **({"bucket_info": bucket_facts} if bucket_facts is not None else {}),
    }
