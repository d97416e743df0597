"""How many steps and epochs a run takes, kohya's way."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from train.config import TrainingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepPlan:
    """Optimizer steps per epoch, epochs to run and the step budget."""

    batches_per_epoch: int  # batches each process draws in one epoch
    steps_per_epoch: int
    num_epochs: int
    max_train_steps: int


def plan_steps(cfg: TrainingConfig, batches_per_epoch: int, num_processes: int = 1) -> StepPlan:
    """Epochs win over steps when both are set (kohya: --max_train_epochs overrides --max_train_steps).

    Both are only still set when both came from config files: when the user typed one of them on the
    command line, load_config has already unset the other.
    """
    # accelerate deals the loader's batches out in turn, so each process draws ceil(batches / processes).
    per_process = math.ceil(batches_per_epoch / num_processes)
    steps_per_epoch = math.ceil(per_process / cfg.gradient_accumulation_steps)
    if cfg.max_train_epochs:
        num_epochs = cfg.max_train_epochs
        max_steps = num_epochs * steps_per_epoch
    else:
        max_steps = int(cfg.max_train_steps or 0)
        num_epochs = math.ceil(max_steps / steps_per_epoch)
    return StepPlan(per_process, steps_per_epoch, num_epochs, max_steps)


def warn_batch_above_epoch(batch_size: int, samples_per_epoch: int) -> bool:
    """Say so when no batch can be as large as training.batch_size: an epoch holds fewer samples (pictures x
    repeats, class pictures included), so every step trains on all of them (kohya does the same, silently)."""
    if batch_size <= samples_per_epoch:
        return False
    log.warning(
        "training.batch_size=%d is larger than an epoch's %d samples (pictures x repeats): every step trains on "
        "at most %d; lower training.batch_size or raise the folders' repeats",
        batch_size, samples_per_epoch, samples_per_epoch,
    )  # fmt: skip
    return True
