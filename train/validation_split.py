"""The validation split (kohya --validation_split / --validation_seed): pictures held out of training.

Each training folder is split on its own, so every folder is represented in both parts: its pictures are
sorted by name, shuffled by a stream seeded with (validation_seed, folder name), and the last
round(n x validation_split) of them are held out. The same folder and seed always hold out the same
pictures, whatever else is in the dataset. Regularization folders are never split: their pictures are the
class prior, not the concept, and kohya keeps them out of validation too.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import replace

from data.folders import Subset
from train.config import DatasetConfig, TrainingConfig
from train.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


def held_out_count(count: int, fraction: float) -> int:
    """How many of a folder's `count` pictures are held out: the fraction, rounded half up."""
    return math.floor(count * fraction + 0.5)


def split_subset(subset: Subset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """(training part, held-out part) of one training folder; both keep the folder's name and repeats."""
    order = sorted(subset.images)
    random.Random(f"{seed}/{subset.name}").shuffle(order)
    cut = len(order) - held_out_count(len(order), fraction)
    return replace(subset, images=sorted(order[:cut])), replace(subset, images=sorted(order[cut:]))


def split_validation(subsets: list[Subset], fraction: float, seed: int) -> tuple[list[Subset], list[Subset]]:
    """(training folders, held-out folders) of `train_dir`'s folders; no split when `fraction` is 0.

    A folder left with no training picture is dropped from training (said once); a split that leaves no
    training picture at all, or holds out none, is a DatasetError naming the counts and the fix.
    """
    if not fraction:
        return subsets, []
    parts = [split_subset(subset, fraction, seed) for subset in subsets]
    kept = [train for train, _ in parts if train.images]
    held = [valid for _, valid in parts if valid.images]
    total = sum(len(subset.images) for subset in subsets)
    held_total = sum(len(subset.images) for subset in held)
    if not held:
        raise DatasetError(
            f"dataset.validation_split={fraction} holds out no picture of the {total} training pictures "
            f"(each folder keeps round(n x {fraction}) of its n): raise it, or set it to 0 for no validation"
        )
    if not kept:
        raise DatasetError(
            f"dataset.validation_split={fraction} holds out all {total} training pictures, leaving none to "
            "train on: lower it (0.1 to 0.2 is usual)"
        )
    if dropped := [train.name for train, _ in parts if not train.images]:
        log.warning(
            "validation_split holds out every picture of %s: those folders are not trained on", dropped
        )
    log.info("validation split: %d of %d training pictures held out", held_total, total)
    return kept, held


def check_validation_keys(d: DatasetConfig, t: TrainingConfig) -> None:
    """dataset.validation_split is a fraction below 1; the validate_* cadences count from 1."""
    if not 0.0 <= d.validation_split < 1.0:
        raise ConfigError(
            f"dataset.validation_split={d.validation_split} must be at least 0 and below 1 (the fraction of "
            "training pictures held out; 0.1 to 0.2 is usual, 0 = no validation)"
        )
    for key in ("validate_every_n_steps", "validate_every_n_epochs", "max_validation_steps"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"training.{key}={value} must be >= 1, or null")
