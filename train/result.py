"""What a training run hands back to its caller: the files it wrote and how it went."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    """What a finished run wrote and how it went."""

    run_dir: Path
    lora_path: Path
    epoch_files: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    scores_path: Path | None = None
    scores: dict | None = None
    final_loss: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    is_main: bool = True  # False in the other processes of a multi-process launch: they print nothing
    objective: float | None = None  # objective.kind's value, measured by the main process after eval
    already_finished: bool = False  # resume found the run complete: nothing was trained
