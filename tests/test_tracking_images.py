"""Pictures reach the trackers: wandb's offline run keeps each PNG under its media folder, tensorboard's
event file holds one image summary per picture."""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from PIL import Image

from train.config import LoggerConfig
from train.tracking import MetricsLog, start_trackers


def _pictures(folder: Path) -> list[tuple[Path, str]]:
    files = []
    for index, colour in enumerate(["red", "blue"]):
        path = folder / f"{index}.png"
        Image.new("RGB", (16, 8), colour).save(path)
        files.append((path, f"a {colour} picture"))
    return files


def test_wandb_offline_run_keeps_the_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    accelerator = Accelerator(log_with="wandb")
    start_trackers(accelerator, LoggerConfig(kind="wandb"), tmp_path, "images", {"seed": 1})
    MetricsLog(accelerator, tmp_path / "metrics.jsonl").log_images({"samples": _pictures(tmp_path)}, step=3)
    accelerator.end_training()
    media = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))
    assert len(media) == 2
    assert {Image.open(p).size for p in media} == {(16, 8)}
    assert not (tmp_path / "metrics.jsonl").exists()  # numbers only; images are not metrics


def test_tensorboard_gets_one_image_per_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(log_with="tensorboard", project_dir=tmp_path)
    start_trackers(accelerator, LoggerConfig(kind="tensorboard"), tmp_path, "images", {"seed": 1})
    MetricsLog(accelerator, tmp_path / "metrics.jsonl").log_images({"samples": _pictures(tmp_path)}, step=5)
    accelerator.end_training()
    events = tmp_path / "lorasmith"  # the project's folder; hparams go to a subfolder of their own
    reader = EventAccumulator(str(events), size_guidance={"images": 0})
    reader.Reload()
    assert sorted(reader.Tags()["images"]) == ["samples/0", "samples/1"]
    (image,) = reader.Images("samples/1")
    assert (image.step, image.width, image.height) == (5, 16, 8)
