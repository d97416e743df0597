"""The order of an epoch's batches: a pure function of (seed, epoch), so a resumed run replays it exactly.

torch's shuffling DataLoader draws its order from a generator whose state moves with every epoch and every
iterator; after a crash nobody can say where it stood. These samplers compute the whole epoch's order from
the seed and the epoch number alone, and can start an epoch part-way (`skip(n)` before the pass), so
`resume` continues with the very batch that came next, without loading the batches before it.

accelerate calls `set_epoch(n)` on a batch sampler at every pass with its own count of passes; the trainer
sets that count to the epoch first (`DataLoaderShard.set_epoch`), so both agree, and `set_epoch` leaves a
pending `skip` alone.

With N processes accelerate deals the batches out in turn (batch i to process i mod N). The sampler pads the
epoch itself to a multiple of N, repeating its first batches as accelerate would, so the padding does not
depend on where a pass started, and `skip(n)` passes over every process's first n batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Base of the batch samplers: `batches()` gives the epoch's batches; iteration starts at `start_batch`."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self.processes = 1  # the processes the batches are dealt out to (set by the trainer)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass uses."""
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """Let the next pass (only) start after each process's first `batches` batches."""
        self.start_batch = batches * self.processes

    def batches(self) -> list[list[int]]:
        raise NotImplementedError

    def dealt_batches(self) -> list[list[int]]:
        """The epoch's batches, padded with its first ones to a multiple of the processes."""
        batches = self.batches()
        return batches + batches[: -len(batches) % self.processes]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        return iter(self.dealt_batches()[start:])

    def __len__(self) -> int:
        unpadded = self.batch_count()
        return unpadded + -unpadded % self.processes

    def batch_count(self) -> int:
        """The epoch's batches before padding."""
        raise NotImplementedError


class ShuffledBatchSampler(EpochBatchSampler):
    """All sample indices shuffled once per epoch and cut into batches (the last one may be short)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        super().__init__(seed)
        self.num_samples = num_samples
        # Not named `batch_size`: see BucketBatchSampler (accelerate would drop short last batches).
        self.max_batch_size = batch_size

    def batches(self) -> list[list[int]]:
        order = list(range(self.num_samples))
        random.Random(f"order/{self.seed}/{self.epoch}").shuffle(order)
        size = self.max_batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def batch_count(self) -> int:
        return -(-self.num_samples // self.max_batch_size)
