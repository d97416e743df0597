"""Aspect-ratio buckets in training (kohya's enable_bucket): each picture's bucket, batches of one bucket."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

from data import buckets as bucket_rules
from data.buckets import Size
from train.batch_order import EpochBatchSampler
from train.config import DatasetConfig


def bucket_chooser(config: DatasetConfig) -> Callable[[Size], Size]:
    """The function that maps a picture's (w, h) to its bucket (w, h), as the dataset config says."""
    return bucket_rules.bucket_chooser(
        config.resolution,
        config.min_bucket_reso,
        config.max_bucket_reso,
        config.bucket_reso_steps,
        config.bucket_no_upscale,
    )


def count_bucket_batches(buckets: Sequence[Size], batch_size: int) -> int:
    """Batches per epoch when each batch holds one bucket: the sum over buckets of ceil(samples / batch_size)."""
    return sum(math.ceil(n / batch_size) for n in Counter(buckets).values())


def bucket_info(buckets: Sequence[Size], ar_errors: Sequence[float]) -> dict:
    """kohya's `ss_bucket_info`: samples per bucket (sorted by size) and the mean aspect-ratio error."""
    counts = sorted(Counter(buckets).items())
    return {
        "buckets": {
            str(i): {"resolution": list(bucket), "count": count} for i, (bucket, count) in enumerate(counts)
        },
        "mean_img_ar_error": sum(ar_errors) / len(ar_errors) if ar_errors else 0.0,
    }


class BucketBatchSampler(EpochBatchSampler):
    """Batches of sample indices that share a bucket: shuffled within each bucket, then batches shuffled.

    `buckets[i]` is the bucket of sample i (repeats are separate samples). The order depends only on
    (seed, epoch); call `set_epoch` before each pass. The last batch of a bucket may be short, as in kohya.
    """

    def __init__(self, buckets: Sequence[Size], batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        super().__init__(seed)
        self.buckets = list(buckets)
        # Not named `batch_size`: without that attribute accelerate deals whole batches of any length out
        # round-robin over the processes; with it, it drops every round whose last batch is short.
        self.max_batch_size = batch_size

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        rng = random.Random(f"buckets/{self.seed}/{self.epoch}")
        groups: dict[Size, list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            groups.setdefault(bucket, []).append(index)
        batches: list[list[int]] = []
        for bucket in sorted(groups):  # a fixed bucket order, so the seed alone decides the shuffle
            members = groups[bucket]
            rng.shuffle(members)
            batches += [
                members[i : i + self.max_batch_size] for i in range(0, len(members), self.max_batch_size)
            ]
        rng.shuffle(batches)
        return batches

    def batch_count(self) -> int:
        return count_bucket_batches(self.buckets, self.max_batch_size)
