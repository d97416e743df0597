"""Resumable training state: where the loop stands, and every random stream, saved at a step boundary.

A state folder (`NAME-000004-state/`, `NAME-step00000300-state/`, `NAME-state/`) holds the trained tensors
(`network.safetensors`, exact dtype), the optimizer's moments (`optimizer.pt`), the random streams of each
process (`rng-0.pt`, `rng-1.pt`, ... by process index: torch, CUDA, Python, NumPy), the loss scaler (`scaler.pt`, fp16 only) and
`train_state.json` (step, epoch, position inside the epoch, recent losses, files written, what the state
fits). Pickles are read with `weights_only=True`: a state folder cannot run code. The folder is written
under a temporary name and renamed into place, so a folder with the final name is always complete.
"""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.errors import LoraSmithError

STATE_FORMAT = 1
STATE_FILE = "train_state.json"
AVERAGE_WINDOW = 50  # losses in the running average (kohya's loss/average is a moving average too)


class ResumeError(LoraSmithError):
    """A state that cannot be resumed: missing, incomplete, or made for another network or model."""


@dataclass
class Progress:
    """Where the loop stands after `step` optimizer steps: all a resumed run needs besides the tensors."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch in progress (1-based)
    batch: int = 0  # batches of `epoch` already trained (gradient-accumulation micro-batches count)
    epoch_done: bool = False  # the end-of-epoch work (epoch average, epoch file) is done
    losses: list[float] = field(default_factory=list)  # the last AVERAGE_WINDOW step losses
    epoch_losses: list[float] = field(default_factory=list)  # every batch loss of the epoch in progress
    saved: list[str] = field(default_factory=list)  # LoRA files written so far (names in the run folder)
    lr_step: int = 0  # the lr schedule's position (its steps; fewer than `step` when fp16 skipped some)

    def record(self, loss: float) -> float:
        """Add a step's loss; return the running average."""
        self.losses = (self.losses + [loss])[-AVERAGE_WINDOW:]
        return sum(self.losses) / len(self.losses)

    @property
    def average(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else float("nan")

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.epoch_done, self.epoch_losses = self.epoch + 1, 0, False, []


def capture_rng() -> dict[str, Any]:
    """Every global random stream of this process, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the streams `capture_rng` saved."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class SavedState:
    """A state folder read back: the progress, what it fits, and the loaded tensors and states."""

    folder: Path
    progress: Progress
    fits: dict[str, Any]
    network: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    scaler: dict[str, Any] | None


def write_state_files(
    folder: Path,
    progress: Progress,
    fits: dict[str, Any],
    network: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scaler: dict[str, Any] | None,
    rngs: list[dict[str, Any]],
) -> None:
    """Write the state into `folder` (an empty temporary folder: the caller renames it into place).

    `rngs` holds every process's `capture_rng()`, in process order: with buckets the processes draw
    different amounts of noise, so their streams differ and each resumes from its own.
    """
    from safetensors.torch import save

    # Through Python's open (the umask's ordinary mode), not save_file, which creates files 0600.
    (folder / "network.safetensors").write_bytes(save({k: v.contiguous() for k, v in network.items()}))
    torch.save(optimizer, folder / "optimizer.pt")
    for index, rng in enumerate(rngs):
        torch.save(rng, folder / rng_file_name(index))
    if scaler is not None:
        torch.save(scaler, folder / "scaler.pt")
    record = {"format": STATE_FORMAT, "progress": asdict(progress), "fits": fits}
    (folder / STATE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")


def read_progress(folder: Path) -> tuple[Progress, dict[str, Any]]:
    """The progress and fit record of a state folder, without loading its tensors."""
    path = folder / STATE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["format"] != STATE_FORMAT:
            raise ValueError(f"format {record['format']!r}, this program reads format {STATE_FORMAT}")
        progress = Progress(**record["progress"])
        _check_types(progress)
        return progress, record["fits"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ResumeError(f"{folder} is not a complete training state ({path.name}: {error})") from error


def _check_types(progress: Progress) -> None:
    """Each field of a state's progress has its declared type (a hand-edited file fails here, not mid-run)."""
    for name in ("step", "epoch", "batch", "lr_step"):
        value = getattr(progress, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"progress.{name} is {value!r}, not a count")
    for name in ("losses", "epoch_losses", "saved"):
        kind = str if name == "saved" else (int, float)
        if not isinstance(getattr(progress, name), list) or not all(
            isinstance(v, kind) for v in getattr(progress, name)
        ):
            raise ValueError(f"progress.{name} is not a list of {'names' if name == 'saved' else 'numbers'}")


def rng_file_name(process_index: int) -> str:
    return f"rng-{process_index}.pt"


def load_state(folder: Path, process_index: int = 0) -> SavedState:
    """Read a state folder for process `process_index`; pickles only as plain tensors (weights_only=True)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    progress, fits = read_progress(folder)
    try:
        network = load_file(str(folder / "network.safetensors"))
        optimizer = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(folder / rng_file_name(process_index), map_location="cpu", weights_only=True)
        scaler_file = folder / "scaler.pt"
        scaler = torch.load(scaler_file, weights_only=True) if scaler_file.exists() else None
    except pickle.UnpicklingError as error:  # weights_only=True met something other than tensors and values
        raise ResumeError(
            f"the training state in {folder} holds objects other than tensors and plain values, which are not "
            "loaded (they could run code): resume from a state this program wrote"
        ) from error
    except (OSError, RuntimeError, ValueError, SafetensorError) as error:
        raise ResumeError(f"cannot read the training state in {folder}: {error}") from error
    return SavedState(folder, progress, fits, network, optimizer, rng, scaler)


def find_states(run_dir: Path) -> list[Path]:
    """The complete state folders of a run folder (`*-state` with a train_state.json), oldest step first."""
    found = []
    for folder in run_dir.glob("*-state"):
        if folder.is_dir() and (folder / STATE_FILE).is_file():
            try:
                found.append((read_progress(folder)[0].step, folder.name, folder))
            except ResumeError:
                continue
    return [folder for _, _, folder in sorted(found)]


def mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between the fit record of a state and this run's ("" when it fits)."""
    problems = []
    for key in sorted(saved.keys() & current.keys()):  # a key newer than the state is not compared
        if saved[key] != current[key]:
            problems.append(f"{key}: state {_short(saved.get(key))}, this run {_short(current.get(key))}")
    return "; ".join(problems)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
