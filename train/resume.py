"""Continuing a run from a state folder: check that it fits, then put every tensor and stream back.

What must match is what the state's tensors mean: the network's layers and shapes and the base model. What
may change is what a user extends or tunes on resume: the number of epochs or steps, the learning rates
(the optimizer keeps its moments, takes the new rates; the schedule is rebuilt for the new length and set
to the saved step).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from train.optimizers import optimizer_class
from train.result import RunResult
from train.run_folder import check_fresh_run_folder, clean_stale_temp_files, previous_run_outputs
from train.saving import final_file_name
from train.state import Progress, ResumeError, SavedState, find_states, mismatch, read_progress, restore_rng

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.run import Trainer

log = logging.getLogger(__name__)


def model_fingerprint(bundle) -> str:
    """A digest of a few UNet tensors that differ between any two base models (its input and output layers);
    taken as loaded, before any cast to half precision, so a state fits whatever precision resumes it."""
    digest = hashlib.sha256()
    for tensor in (bundle.unet.conv_in.weight, bundle.unet.conv_out.weight):
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fits_record(trainer: Trainer) -> dict[str, Any]:
    """What a state must share with the run that resumes it."""
    net = trainer.cfg.network
    return {
        "base model": f"{trainer.bundle.source} ({trainer.model_fingerprint})",
        "network": f"{net.module} dim {net.dim} alpha {net.alpha} conv_dim {net.conv_dim} "
        f"conv_alpha {net.resolved_conv_alpha}",
        "network layers": trainer.network.shape_signature(),
        "optimizer": optimizer_class(trainer.optimizer),  # another one cannot read these moments
        "processes": trainer.accelerator.num_processes,
        "batches per epoch": trainer.plan.batches_per_epoch,
    }


def restore_progress(trainer: Trainer, saved: SavedState) -> Progress:
    """Load `saved` into the trainer (network, optimizer moments, schedule position, scaler, RNG)."""
    problems = mismatch(saved.fits, fits_record(trainer))
    if problems:
        raise ResumeError(f"the state {saved.folder} does not fit this run: {problems}")
    trainer.network.load_trainable_tensors(saved.network)
    _load_optimizer_moments(trainer.optimizer, saved.optimizer, trainer.cfg.optimizer.args, saved.fits)
    _set_schedule_step(trainer.lr_scheduler, saved.progress.lr_step)
    if saved.scaler is not None and trainer.accelerator.scaler is not None:
        trainer.accelerator.scaler.load_state_dict(saved.scaler)
    restore_rng(saved.rng)
    progress = saved.progress
    trainer.metrics.truncate_after(progress.step)  # lines logged after the state by the killed run
    print(f"resuming from {saved.folder} at step {progress.step} (epoch {progress.epoch})")
    return progress


def _load_optimizer_moments(
    optimizer, saved: dict[str, Any], given: Iterable[str], fits: dict[str, Any]
) -> None:
    """The saved state (moments, step counts, and what some optimizers keep per group: Prodigy's step-size
    estimate d, a schedule-free average's weight sum), with this run's learning rates and the arguments
    `given` in optimizer.args, so a resumed run may change them."""
    current = optimizer.state_dict()
    if not fits.get("optimizer"):  # a state from before the fit record named its optimizer
        ours, theirs = set(current["param_groups"][0]), set(saved["param_groups"][0])
        if ours != theirs:  # another class keeps other settings per group; its moments mean nothing here
            raise ResumeError(
                "the state was trained with another optimizer (its settings "
                f"{', '.join(sorted(theirs - ours))}; this run's {', '.join(sorted(ours - theirs))}): resume "
                "with the optimizer it was trained with"
            )
    if len(current["param_groups"]) != len(saved["param_groups"]):
        raise ResumeError(
            "the state's optimizer has other parameter groups (a text-encoder or UNet lr set to 0, or LoRA+ "
            "ratios, on one side only): resume with the learning rates and LoRA+ settings it was trained with"
        )
    from_this_run = ("params", "lr", "initial_lr", *given)
    groups = [
        {**then, **{key: now[key] for key in from_this_run if key in now}}
        for now, then in zip(current["param_groups"], saved["param_groups"], strict=True)
    ]
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def _set_schedule_step(scheduler, step: int) -> None:
    """Put the lr schedule at `step`, as if it had been stepped that many times (base rates from this run)."""
    inner = getattr(scheduler, "scheduler", scheduler)
    inner.last_epoch = step - 1
    with torch.no_grad():
        _step_quietly(inner)


def _step_quietly(inner) -> None:
    """One `step()` to recompute the rates, without the 'scheduler before optimizer' warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inner.step()


def resume_point(cfg: TrainConfig, run_dir: Path) -> Path | None:
    """The state folder to continue from: none, the newest complete one (`auto`), or the one given."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        states = find_states(run_dir)
        if not states and not previous_run_outputs(run_dir, cfg.name):  # else steps_done says what it is
            log.warning("resume=auto: %s holds no training state yet: starting from the beginning", run_dir)
        return states[-1] if states else None
    folder = Path(cfg.resume).expanduser()
    read_progress(folder)  # a clear error when it is not a complete state
    return folder


def final_lora_steps(run_dir: Path, name: str) -> int | None:
    """The steps the final LoRA file in `run_dir` was trained for (its header), or None without one."""
    final = run_dir / final_file_name(name)
    if not final.is_file():
        return None
    with safe_open(str(final), framework="pt") as handle:
        return int((handle.metadata() or {}).get("ss_steps", 0))


def steps_done(trainer: Trainer, start: Path | None) -> int | None:
    """Steps an earlier run in this folder already trained: from the state resumed, else (resume=auto in a
    folder whose run kept no state) from its final LoRA's header; None when there is no earlier run.

    With resume=auto, a final LoRA trained beyond the newest state (a run resumed after Ctrl-C that then
    finished without training.save_state) is never overwritten by a rerun from that older state."""
    cfg, run_dir = trainer.cfg, trainer.run_dir
    final_done = final_lora_steps(run_dir, cfg.name) if cfg.resume == "auto" else None
    if start is not None:
        at = read_progress(start)[0].step
        if final_done is None or final_done <= at or final_done >= trainer.plan.max_train_steps:
            return max(at, final_done or 0)
        raise ResumeError(
            f"{run_dir / final_file_name(cfg.name)} was trained for {final_done} steps, but the newest training "
            f"state, {start.name}, is at step {at}: continuing from it would overwrite that LoRA. To train a "
            "finished run further, keep its states (training.save_state=true); or choose another hydra.run.dir"
        )
    if cfg.resume != "auto" or not previous_run_outputs(run_dir, cfg.name):
        return None
    if final_done is not None:
        return final_done
    raise ResumeError(
        f"{run_dir} holds LoRA files of an earlier run but no training state to continue from (states are "
        "written with training.save_state=true, and on Ctrl-C): choose another hydra.run.dir"
    )


def finished_result(trainer: Trainer, start: Path | None) -> RunResult | None:
    """When the earlier run already reached the step budget: say so in one line and return its result."""
    done = steps_done(trainer, start)
    if done is None or done < trainer.plan.max_train_steps:
        if start is None and done is not None:
            raise ResumeError(
                f"{trainer.run_dir} holds a LoRA trained for {done} steps but no training state to continue "
                "from (train with training.save_state=true to keep one): choose another hydra.run.dir"
            )
        return None
    if trainer.accelerator.is_main_process:
        print(
            f"already finished at step {done} of {trainer.plan.max_train_steps}; raise "
            "training.max_train_epochs (or training.max_train_steps) to train further"
        )
    run_dir = trainer.run_dir if start is None else start.parent  # resume=PATH: the run that wrote the state
    final = run_dir / final_file_name(trainer.cfg.name)
    return RunResult(run_dir, final, steps=done, already_finished=True,
                     is_main=trainer.accelerator.is_main_process)  # fmt: skip


def open_run(cfg: TrainConfig, run_dir: Path, is_main: bool) -> Path | None:
    """Clear what a killed run left half-written and pick the state to continue from (None: from scratch).

    Without `resume`, a folder that already holds an earlier run's LoRA files is refused: mixing the epoch
    files of two runs would lose track of which is which.
    """
    if is_main:
        clean_stale_temp_files(run_dir)
    start = resume_point(cfg, run_dir)
    if is_main and cfg.resume is None:
        check_fresh_run_folder(run_dir, cfg.name, resuming=False)
    return start
