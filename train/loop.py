"""The training loop: epochs of optimizer steps, saving on kohya's cadence, stopping cleanly.

Everything the loop needs to continue lives in `Progress` (train/state.py); a state written at a step
boundary plus the (seed, epoch)-determined batch order is enough to replay the rest of the run bit for bit.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from train.network.base import begin_step
from train.saving import TrainingDiverged, epoch_file_name, is_epoch_save, is_step_save, step_file_name
from train.signals import EXIT_CODES, StopRequest, TrainingInterrupted
from train.state import Progress
from train.validation import is_validation_epoch, is_validation_step

if TYPE_CHECKING:
    from train.run import Trainer


def check_loss(loss: float, progress: Progress, trainer: Trainer) -> None:
    """Stop at the first non-finite loss, saying where and what to change; earlier files stay as they are."""
    if math.isfinite(loss):
        return
    last = (
        f"the last good LoRA is {trainer.run_dir / progress.saved[-1]}"
        if progress.saved
        else ("no LoRA was saved before it (training.save_every_n_steps keeps some along the way)")
    )
    precision = (
        " or train in bf16/fp32 instead of fp16" if trainer.precision.mixed_precision == "fp16" else ""
    )
    raise TrainingDiverged(
        f"loss is {loss} at step {progress.step + 1} (epoch {progress.epoch}): training stopped. Lower the "
        f"learning rate ({trainer.describe_lrs()}){precision}; {last}"
    )


def train_epoch(trainer: Trainer, progress: Progress, stop: StopRequest, bar: tqdm) -> None:
    """Train the rest of `progress.epoch`, from batch `progress.batch` on; returns at the step budget or stop."""
    plan, acc = trainer.plan, trainer.accelerator
    trainer.start_epoch(progress.epoch, progress.batch)
    started = time.perf_counter()
    for batch in trainer.loader:
        begin_step(trainer.network, progress.step)
        loss = trainer.optimizer_step(batch)
        check_loss(loss, progress, trainer)
        progress.batch += 1
        progress.epoch_losses.append(loss)
        if not acc.sync_gradients:
            continue
        progress.step += 1
        average = progress.record(loss)
        now = time.perf_counter()
        trainer.log_step(loss, average, progress.step, now - started)
        if trainer.held_out and is_validation_step(trainer.cfg.training, progress.step):
            trainer.validate(progress.step)  # before a stop's save, so a resume keeps its line
        started = time.perf_counter()
        bar.update(1)
        bar.set_postfix(epoch=progress.epoch, loss=f"{average:.4f}")
        last = progress.step >= plan.max_train_steps
        stop_if_requested(trainer, progress, stop)
        if is_step_save(trainer.cfg.training, progress.step, last):
            trainer.save_checkpoint(step_file_name(trainer.cfg.name, progress.step), progress)
        trainer.samples.after_step(trainer, progress, stop)
        stop_if_requested(trainer, progress, stop)  # a Ctrl-C during the samples: not one more step
        if last:
            return


def finish_epoch(trainer: Trainer, progress: Progress, stop: StopRequest) -> None:
    """The end-of-epoch work: the epoch's average loss, and the validation loss, the epoch file and samples
    when due."""
    losses = progress.epoch_losses
    trainer.metrics.log({"loss/epoch_average": sum(losses) / max(len(losses), 1)}, progress.step)
    progress.epoch_done = True
    last = progress.step >= trainer.plan.max_train_steps or progress.epoch == trainer.plan.num_epochs
    t = trainer.cfg.training
    # kohya's epoch cadence, and always the end of the run; never twice at one step.
    if trainer.held_out and (last or is_validation_epoch(t, progress.epoch)):
        if not is_validation_step(t, progress.step):
            trainer.validate(progress.step)
    if is_epoch_save(trainer.cfg.training, progress.epoch, last):
        trainer.save_checkpoint(epoch_file_name(trainer.cfg.name, progress.epoch), progress)
    trainer.samples.at_epoch_end(trainer, progress, stop)


def stop_if_requested(trainer: Trainer, progress: Progress, stop: StopRequest) -> None:
    """At a step boundary (the state of `progress` is complete): save and stop when a stop was asked for."""
    if stop.requested:
        raise interrupted(trainer, progress, stop)


def interrupted(trainer: Trainer, progress: Progress, stop: StopRequest) -> TrainingInterrupted:
    """Save the LoRA and the state of the step just finished; the error says where and how to go on. Before
    the first step (a Ctrl-C during sample.at_start's pictures) there is nothing to save."""
    if progress.step == 0:
        return TrainingInterrupted(
            f"{stop.name}: stopped before the first step; nothing was trained or saved",
            EXIT_CODES.get(stop.signum, 1),
        )
    path = trainer.save_checkpoint(step_file_name(trainer.cfg.name, progress.step), progress, state=True)
    return TrainingInterrupted(
        f"{stop.name}: stopped after step {progress.step} of {trainer.plan.max_train_steps} (epoch "
        f"{progress.epoch}); saved {path} and its state {path.stem}-state/. Continue with the same command "
        f"plus resume=auto hydra.run.dir={trainer.run_dir}",
        EXIT_CODES.get(stop.signum, 1),
    )


def run_loop(trainer: Trainer, progress: Progress, stop: StopRequest) -> Path:
    """Train from `progress` to the step budget; write and return the final LoRA file."""
    plan = trainer.plan
    bar = tqdm(
        total=plan.max_train_steps,
        initial=progress.step,
        desc="training",
        disable=not trainer.accelerator.is_local_main_process,
    )
    try:
        trainer.samples.at_start(trainer, progress, stop)
        stop_if_requested(trainer, progress, stop)
        while progress.step < plan.max_train_steps and progress.epoch <= plan.num_epochs:
            if not progress.epoch_done:
                train_epoch(trainer, progress, stop, bar)
                finish_epoch(trainer, progress, stop)
                stop_if_requested(trainer, progress, stop)
            if progress.step >= plan.max_train_steps or progress.epoch >= plan.num_epochs:
                break
            progress.next_epoch()
    finally:
        bar.close()  # ends the bar's line, so an error message starts a line of its own
    return trainer.save_final(progress)
