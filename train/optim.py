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
    warmup, total = warmup_steps(cfg, total_steps) * processes, total_steps * processes
    if cfg.name == "cosine_with_min_lr":
        return cosine_with_min_lr(optimizer, warmup, total, cfg.num_cycles, cfg.min_lr_ratio)
    if cfg.name == "rex":
        return rex(optimizer, warmup, total, cfg.min_lr_ratio)
    return get_scheduler(
        cfg.name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
        num_cycles=cfg.num_cycles,
        power=cfg.power,
    )


def adafactor_schedule(optimizer: torch.optim.Optimizer):
    """Adafactor with relative_step sets each step's rate itself; this schedule only reports it (kohya's
    `adafactor` scheduler, transformers' AdafactorSchedule)."""
    from transformers.optimization import AdafactorSchedule

    return AdafactorSchedule(optimizer, initial_lr=0.0)


def cosine_with_min_lr(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int, min_ratio: float
):
    """Half a cosine per cycle from the full rate down to `min_ratio` of it (kohya's cosine_with_min_lr,
    which hands transformers num_cycles / 2)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup, total, num_cycles=cycles / 2, min_lr_rate=min_ratio
    )


REX_D = 0.9  # the REX paper's profile constant (arXiv 2107.04197), as OneTrainer uses it


def rex_factor(progress: float) -> float:
    """REX: (1 - p) / ((1 - d) + d (1 - p)), from 1 at p = 0 to 0 at p = 1; it stays high longer than
    linear decay and falls faster at the end."""
    if progress >= 1:
        return 0.0
    return (1 - progress) / ((1 - REX_D) + REX_D * (1 - progress))


def rex(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warmup, then the REX decay to `min_ratio` of the rate at the last step (OneTrainer's REX)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return min_ratio + (1 - min_ratio) * rex_factor(progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
