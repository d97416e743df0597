"""When LoRA files (and resume states) are written, what they are called, and which old ones go.

kohya's names and rules: `NAME-000004.safetensors` every `save_every_n_epochs`, `NAME-step00000300.safetensors`
every `save_every_n_steps`, the final `NAME.safetensors`; `save_last_n_epochs` keeps the newest K epoch files,
`save_last_n_steps` keeps the step files of the last N steps. With `save_state`, a `<file stem>-state/`
folder is written beside each file. Nothing non-finite is ever written: a NaN never becomes a LoRA.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from data.errors import LoraSmithError
from train.config import TrainingConfig


class TrainingDiverged(LoraSmithError):
    """The loss or the weights became NaN or infinite."""


def epoch_file_name(name: str, epoch: int) -> str:
    """kohya's per-epoch name: `NAME-000001.safetensors`."""
    return f"{name}-{epoch:06d}.safetensors"


def step_file_name(name: str, step: int) -> str:
    """kohya's per-step name: `NAME-step00000100.safetensors`."""
    return f"{name}-step{step:08d}.safetensors"


def final_file_name(name: str) -> str:
    return f"{name}.safetensors"


def state_folder(lora_path: Path) -> Path:
    """The resume state that belongs to a LoRA file: `NAME-000004.safetensors` → `NAME-000004-state/`."""
    return lora_path.with_name(f"{lora_path.stem}-state")


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to write `tensors` when any value is NaN or infinite."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDiverged(
                f"{what} would hold non-finite weights ({key}): not written. Lower the learning rate, or "
                "train in fp32/bf16 instead of fp16"
            )


def is_epoch_save(cfg: TrainingConfig, epoch: int, last: bool) -> bool:
    """An epoch file after `epoch`? Never for the last epoch: that one is the final file."""
    every = cfg.save_every_n_epochs
    return bool(every) and not last and epoch % every == 0


def is_step_save(cfg: TrainingConfig, step: int, last: bool) -> bool:
    every = cfg.save_every_n_steps
    return bool(every) and not last and step % every == 0


_EPOCH_FILE = r"-(\d{6})\.safetensors"
_STEP_FILE = r"-step(\d{8})\.safetensors"


def expired_files(cfg: TrainingConfig, name: str, saved: list[str], epoch: int, step: int) -> list[str]:
    """The saved epoch/step files that `save_last_n_epochs` / `save_last_n_steps` no longer keep."""
    expired = []
    epochs = [f for f in saved if re.fullmatch(re.escape(name) + _EPOCH_FILE, f)]
    if cfg.save_last_n_epochs:
        expired += epochs[: max(len(epochs) - cfg.save_last_n_epochs, 0)]
    if cfg.save_last_n_steps:
        for file in saved:
            match = re.fullmatch(re.escape(name) + _STEP_FILE, file)
            if match and int(match.group(1)) <= step - cfg.save_last_n_steps:
                expired.append(file)
    return expired


def remove_saved(run_dir: Path, file: str) -> None:
    """Delete a saved file, its state folder (first: a state never outlives its place in order) and the
    sidecar `.yaml` a full fine-tune's file may have."""
    shutil.rmtree(state_folder(run_dir / file), ignore_errors=True)
    (run_dir / file).unlink(missing_ok=True)
    (run_dir / file).with_suffix(".yaml").unlink(missing_ok=True)


def prune(
    run_dir: Path, cfg: TrainingConfig, name: str, saved: list[str], epoch: int, step: int
) -> list[str]:
    """Apply the keep-newest rules; return the files still kept."""
    gone = expired_files(cfg, name, saved, epoch, step)
    for file in gone:
        remove_saved(run_dir, file)
    return [f for f in saved if f not in gone]


def write_lora_and_state(
    path: Path,
    write_lora: Callable[[Path], Path],
    write_state: Callable[[Path], None] | None,
) -> Path:
    """Write the state folder (if asked) and then the LoRA: a LoRA on disk always has its state beside it."""
    if write_state is not None:
        write_state(state_folder(path))
    return write_lora(path)
