"""kohya's regularization balancing: about as many reg samples per epoch as train samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.folders import Subset


@dataclass
class RegEntry:
    """One regularization image and how many samples of it an epoch holds."""

    path: Path
    times_used: int
    subset: Subset


@dataclass
class RegPlan:
    """The balanced regularization set: used entries in order, and how many reg images were left out."""

    entries: list[RegEntry] = field(default_factory=list)
    unused: int = 0

    @property
    def num_samples(self) -> int:
        """Reg samples per epoch (Σ times_used)."""
        return sum(entry.times_used for entry in self.entries)


def count_samples(subsets: list[Subset]) -> int:
    """Samples per epoch of `subsets`: Σ images × repeats."""
    return sum(len(subset.images) * subset.repeats for subset in subsets)


def balance_reg(train: list[Subset], reg: list[Subset]) -> RegPlan:
    """Pick reg samples round-robin until their count reaches the train sample count (kohya's rule).

    Reg images are visited in folder order, then sorted file order. The first pass counts each image with its
    folder's repeats; later passes add one use per image. It stops as soon as the running count reaches the
    train count, so it may overshoot by less than one folder's repeats, and later images may stay unused.
    """
    target = count_samples(train)
    order = [(path, subset) for subset in reg for path in subset.images]
    if not order or target <= 0:
        return RegPlan(entries=[], unused=len(order))
    uses = [0] * len(order)
    total = 0
    first_pass = True
    while total < target:
        for i, (_, subset) in enumerate(order):
            step = subset.repeats if first_pass else 1
            uses[i] += step
            total += step
            if total >= target:
                break
        first_pass = False
    entries = [RegEntry(path, n, subset) for (path, subset), n in zip(order, uses, strict=True) if n > 0]
    return RegPlan(entries=entries, unused=len(order) - len(entries))
