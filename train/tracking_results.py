"""What the trackers get at the end of training besides numbers: the eval grid and its cells as images,
the scores as a table, the final LoRA and its config as a versioned artifact."""

from __future__ import annotations

import re
from pathlib import Path

from train.config import TrainConfig
from train.result import RunResult
from train.run_contents import png_caption, score_table
from train.tracking import MetricsLog

ARTIFACT_TYPE = "lora"


def log_eval(metrics: MetricsLog, grid_path: Path, scores: dict | None, step: int) -> None:
    """The grid (`eval/grid`), each cell with its prompt (`eval/cells`), and `eval/scores` as a table."""
    cells = sorted(p for p in grid_path.parent.glob("*.png") if p != grid_path)
    images = {"eval/grid": [(grid_path, png_caption(grid_path))]}
    if cells:
        images["eval/cells"] = [(path, f"{path.stem}: {png_caption(path)}") for path in cells]
    metrics.log_images(images, step)
    if scores:
        metrics.log_table("eval/scores", *score_table(scores), step=step)


def log_lora(metrics: MetricsLog, result: RunResult, cfg: TrainConfig, steps: int) -> None:
    """The final LoRA file and config.yaml as one artifact named after the file; how long it trained, on
    what, and how it scored as its metadata."""
    config_path = result.run_dir / "config.yaml"
    files = [result.lora_path] + ([config_path] if config_path.is_file() else [])
    facts = {
        "steps": steps, "final_loss": result.final_loss, "network": cfg.network.module,
        "dim": cfg.network.dim, "base_model": cfg.model.path, "scores": result.scores,
    }  # fmt: skip
    metrics.log_artifact(artifact_name(result.lora_path.stem), ARTIFACT_TYPE, files, facts)


def artifact_name(stem: str) -> str:
    """wandb's artifact names take letters, digits, `-`, `_` and `.` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "lora"
