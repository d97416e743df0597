"""Metrics go to `metrics.jsonl` in the run folder and to the chosen tracker (wandb offline, tensorboard)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from train.config import LoggerConfig


def tracker_name(cfg: LoggerConfig) -> str | None:
    """accelerate's `log_with` value for the configured logger (None = no tracker)."""
    return None if cfg.kind == "none" else cfg.kind


def start_trackers(
    accelerator: Accelerator, cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict
) -> None:
    """Open the tracker run; wandb stays offline unless `logger.wandb_mode=online`."""
    if cfg.kind == "none":
        return
    init_kwargs: dict[str, dict[str, Any]] = {}
    if cfg.kind == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        init_kwargs["wandb"] = {"mode": cfg.wandb_mode, "dir": str(run_dir), "name": run_name}
    if cfg.kind == "tensorboard":
        config = flat_scalars(config)
    accelerator.init_trackers(cfg.project, config=config, init_kwargs=init_kwargs)


def flat_scalars(config: dict, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": [1]}}` → `{"a/b": "[1]"}`: tensorboard's hparams take only flat scalar values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_scalars(value, name + "/"))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl` and forwards it to the trackers."""

    def __init__(self, accelerator: Accelerator, path: Path):
        self.accelerator = accelerator
        self.path = path

    def log(self, values: dict[str, float], step: int) -> None:
        """Record `values` at optimizer step `step` (main process only); NaN and infinity become null."""
        if not self.accelerator.is_main_process:
            return
        record = {"step": step, **{k: _json_number(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
        self.accelerator.log(values, step=step)

    def log_images(self, images: dict[str, list[tuple[Path, str]]], step: int) -> None:
        """Send PNG files to the trackers: `{"samples": [(path, caption), …]}` becomes one `wandb.Image` list
        under `samples` (captions shown under each picture) and one tensorboard image per file under
        `samples/0`, `samples/1`, … (tensorboard has no captions; the step tells them apart). The files stay
        where they are: `metrics.jsonl` holds numbers only (main process only)."""
        if not self.accelerator.is_main_process or not images:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                _wandb_images(tracker.tracker, images, step)
            elif tracker.name == "tensorboard":
                _tensorboard_images(tracker.tracker, images, step)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """A table (wandb only: tensorboard has no tables; its numbers go through `log` as scalars)."""
        if not self.accelerator.is_main_process:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                import wandb

                tracker.tracker.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def log_artifact(self, name: str, kind: str, files: list[Path], metadata: dict) -> None:
        """Files as one versioned wandb artifact of type `kind`, referenced where they lie in the run folder
        (no copy: the run folder keeps them, and `wandb sync` uploads them from there)."""
        if not self.accelerator.is_main_process:
            return
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                import wandb

                artifact = wandb.Artifact(name, type=kind, metadata=metadata)
                for path in files:
                    artifact.add_file(str(path.resolve()), name=path.name, policy="immutable")
                tracker.tracker.log_artifact(artifact)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (by a killed run that a resume now replays), atomically."""
        if not self.accelerator.is_main_process or not self.path.is_file():
            return
        from data.atomic import write_text_atomic

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:  # a line cut short by the kill
                continue
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def close_trackers(accelerator: Accelerator, error: BaseException | None) -> None:
    """Close every tracker; wandb records how the run ended (0, or the exit code of `error`)."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb" and accelerator.is_main_process:
            tracker.tracker.finish(exit_code=exit_code(error))
        else:
            tracker.finish()
    accelerator.trackers = []
    accelerator.end_training()  # with no trackers left: only a launch's process group


def exit_code(error: BaseException | None) -> int:
    """The status the command line exits with after `error`: 130/143 for Ctrl-C/SIGTERM, 2 for the
    user's mistakes and a diverged run, 1 for anything else."""
    from data.errors import LoraSmithError

    if error is None:
        return 0
    if isinstance(error, KeyboardInterrupt):
        return 130
    if isinstance(error, LoraSmithError):
        return getattr(error, "exit_code", 2)
    return 1


def _wandb_images(run, images: dict[str, list[tuple[Path, str]]], step: int) -> None:
    import wandb

    run.log(
        {
            key: [wandb.Image(str(path), caption=caption) for path, caption in files]
            for key, files in images.items()
        },
        step=step,
    )


def _tensorboard_images(writer, images: dict[str, list[tuple[Path, str]]], step: int) -> None:
    import numpy as np
    from PIL import Image

    for key, files in images.items():
        for index, (path, _caption) in enumerate(files):
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("RGB"))
            writer.add_image(f"{key}/{index}", pixels, global_step=step, dataformats="HWC")
    writer.flush()


def _json_number(value):
    """A float that JSON can hold: NaN and infinity have no JSON form, so they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
