"""The learning-rate schedule from the config, with kohya's names and conventions (optimizers: optimizers.py)."""

from __future__ import annotations

import math

import torch
from diffusers.optimization import get_scheduler

from train.config import SchedulerConfig


def warmup_steps(cfg: SchedulerConfig, total_steps: int) -> int:
    """Warmup in steps; a value below 1 is a fraction of all steps (kohya's `--lr_warmup_steps 0.1`)."""
    if 0 < cfg.warmup_steps < 1:
        return math.ceil(cfg.warmup_steps * total_steps)
    return int(cfg.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int, processes: int = 1
):
    """The learning-rate schedule over `total_steps` optimizer steps of each of `processes` processes.

    accelerate's scheduler wrapper steps the schedule once per process at every optimizer step, so its length
    counts every process's steps (kohya does the same).
    """
    if cfg.name == "adafactor":
        return adafactor_schedule(optimizer)
    return get_scheduler(
        cfg.name,
        optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps) * processes,
        num_training_steps=total_steps * processes,
        num_cycles=cfg.num_cycles,
        power=cfg.power,
    )


def adafactor_schedule(optimizer: torch.optim.Optimizer):
    """Adafactor with relative_step sets each step's rate itself; this schedule only reports it (kohya's
    `adafactor` scheduler, transformers' AdafactorSchedule)."""
    from transformers.optimization import AdafactorSchedule

    return AdafactorSchedule(optimizer, initial_lr=0.0)
