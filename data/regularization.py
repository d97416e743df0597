"""Regularization pictures for `out/reg/1_<class_word>/`: collected from a folder (framed like the training
pictures) or rendered by the base model with fixed seeds. Existing pictures are kept, so a re-run resumes."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from data.folders import dataset_folder_name
from data.framing import Framer
from data.images import write_captioned_picture
from data.prepare_config import PrepareConfig
from data.scan import load_source_image, scan_source

log = logging.getLogger(__name__)


def _done(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.png").is_file() and (folder / f"{stem}.txt").is_file()


def _from_folder(cfg: PrepareConfig, folder: Path, framer: Framer) -> tuple[int, list[dict]]:
    reg = cfg.regularization
    background = tuple(int(c) for c in cfg.background)
    scan = scan_source(Path(reg.path).expanduser(), cfg.min_size, background)
    images = scan.images[: reg.count] if reg.count else scan.images
    for index, image in enumerate(tqdm(images, desc="regularization pictures", unit="img")):
        stem = f"reg_{index:05d}"
        if not _done(folder, stem):
            picture = framer.frame(load_source_image(image, background)).picture
            write_captioned_picture(folder, stem, picture, cfg.class_word, durable=False)
    return len(images), [{"path": str(s.path), "reason": s.reason} for s in scan.skipped]


def _size_for_generation(cfg: PrepareConfig) -> tuple[int, int]:
    crop = cfg.crop
    if crop.mode in ("center", "focus"):
        return crop.width, crop.height
    return crop.max_resolution, crop.max_resolution


def _generated(cfg: PrepareConfig, folder: Path) -> int:
    from inference.models.loading import load_base_model
    from inference.models.spec import ModelConfig
    from inference.txt2img import GenerationParams, generate_batch

    reg = cfg.regularization
    todo = [i for i in range(reg.count) if not _done(folder, f"reg_{i:05d}")]
    if not todo:
        return reg.count
    name = str(reg.model)
    model = load_base_model(
        ModelConfig(kind="toy") if name == "toy" else ModelConfig(kind="pretrained", path=name)
    )
    width, height = _size_for_generation(cfg)
    with tqdm(
        total=reg.count, initial=reg.count - len(todo), desc="rendering class pictures", unit="img"
    ) as bar:
        for first in range(0, len(todo), reg.batch_size):
            indices = todo[first : first + reg.batch_size]
            batch = [
                GenerationParams(
                    reg.prompt, reg.negative_prompt, reg.seed + i, reg.steps, reg.cfg_scale, width, height
                )
                for i in indices
            ]
            for i, picture in zip(indices, generate_batch(model, batch), strict=True):
                write_captioned_picture(folder, f"reg_{i:05d}", picture, cfg.class_word, durable=False)
            bar.update(len(indices))
    return reg.count


def prepare_regularization(cfg: PrepareConfig, out: Path, framer: Framer, training_samples: int) -> dict:
    """Write the class pictures `cfg.regularization` asks for; a summary (count, warning) for the report."""
    reg = cfg.regularization
    if reg.source == "none":
        return {"count": 0, "summary": "none"}
    folder = out / "reg" / dataset_folder_name(1, "", cfg.class_word)
    skipped: list[dict] = []
    if reg.source == "folder":
        count, skipped = _from_folder(cfg, folder, framer)
        summary = f"{count} pictures from `{reg.path}` in `{folder}`"
    else:
        count = _generated(cfg, folder)
        summary = (
            f"{count} pictures rendered by `{reg.model}` (`{reg.prompt}`, seeds {reg.seed}+) in `{folder}`"
        )
    result = {"count": count, "folder": str(folder), "summary": summary, "skipped": skipped}
    if count < training_samples:
        # kohya repeats regularization pictures to match the training samples: few of them repeat often.
        result["warning"] = (
            f"{count} regularization pictures for {training_samples} training samples per epoch (pictures x "
            f"repeats): kohya balances them by repeating the class pictures; {training_samples} or more avoids that"
        )
        log.warning(result["warning"])
    return result
