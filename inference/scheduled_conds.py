"""Prompt editing during sampling, as A1111 applies it: each scheduled text encoded once, picked per step.

`inference.prompts.get_learned_conditioning_prompt_schedules` turns a prompt into [end_step, text] pairs
(`[a|b]` alternation becomes one pair per step). A1111 encodes each text once and, at denoiser call
`step`, conditions each image on the first pair whose end_step >= step, or on the first pair when none is
(its `reconstruct_cond_batch`). `step` counts calls of the CFG denoiser from 0, so a second-order sampler
advances it twice in most steps, and the first text of `[a:b:5]` conditions calls 0 to 5: six calls.
The negative prompt is scheduled the same way.

The steps a schedule spans (A1111's `total_steps`) are the requested steps, doubled for second-order
samplers. img2img counts the requested steps too, not those it samples (at strength 0.5, `[a:b:0.5]`
never reaches b, as in A1111); the hires pass counts its own steps on a timeline continuing the first
pass's (`PromptTimeline.hires_steps`). The call counter restarts at 0 for every sampling pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_Entries = tuple[tuple[int, int], ...]  # ((end_step, encoding row), ...) in step order


@dataclass(frozen=True)
class PromptTimeline:
    """The steps prompt edits are counted in: the first pass's and, for a hires pass, the hires pass's."""

    base_steps: int
    hires_steps: int | None = None


def schedule_steps(steps: int, second_order: bool) -> int:
    """A1111's `total_steps`: how many steps a prompt schedule spans, doubled for two-call samplers."""
    return steps * 2 if second_order else steps


@dataclass(frozen=True)
class ScheduledConds:
    """A batch's conditioning over the sampler's calls: a table of encodings and, per image, which row when.

    `encodings`: (N, L, D), each distinct text once, all of one length. `entries[i]`: image i's
    ((end_step, row), ...), in step order. One entry per image is conditioning that never changes.
    """

    encodings: Tensor
    entries: tuple[_Entries, ...]

    @classmethod
    def fixed(cls, conds: Tensor) -> ScheduledConds:
        """conds: (B, L, D), image i conditioned on row i at every step."""
        return cls(conds, tuple(((0, row),) for row in range(conds.shape[0])))

    @classmethod
    def build(
        cls, encodings: Tensor, rows: Mapping[str, int], schedules: Sequence[Sequence[Sequence[int | str]]]
    ) -> ScheduledConds:
        """From per-image [[end_step, text], ...] schedules and the table row of each text."""
        entries = tuple(
            tuple((int(end), rows[str(text)]) for end, text in schedule) for schedule in schedules
        )
        return cls(encodings, entries)

    @property
    def batch_size(self) -> int:
        """Number of images conditioned."""
        return len(self.entries)

    @property
    def is_fixed(self) -> bool:
        """Whether every image keeps one encoding at every step."""
        return all(len({row for _, row in entries}) == 1 for entries in self.entries)

    def rows_at(self, step: int) -> tuple[int, ...]:
        """Each image's table row at denoiser call `step` (from 0): A1111's first entry ending at or after it."""
        return tuple(_row_at(entries, step) for entries in self.entries)

    def select(self, rows: tuple[int, ...]) -> Tensor:
        """The encodings of `rows`, stacked: (len(rows), L, D); the table itself where it is exactly that."""
        if rows == tuple(range(self.encodings.shape[0])):
            return self.encodings
        return self.encodings[torch.tensor(rows, device=self.encodings.device)]

    def at(self, step: int) -> Tensor:
        """The batch's conditioning at denoiser call `step`: (B, L, D)."""
        return self.select(self.rows_at(step))

    def to(self, device: torch.device | str) -> ScheduledConds:
        """The same schedule with its encodings on `device`."""
        return ScheduledConds(self.encodings.to(device), self.entries)


def _row_at(entries: _Entries, step: int) -> int:
    """The row of the first entry with end_step >= step; the first entry's past the end (as A1111)."""
    for end, row in entries:
        if step <= end:
            return row
    return entries[0][1]


def as_scheduled(conds: Tensor | ScheduledConds) -> ScheduledConds:
    """Conditioning as a schedule: a plain (B, L, D) tensor is one that never changes."""
    return conds if isinstance(conds, ScheduledConds) else ScheduledConds.fixed(conds)
