"""Write the toy base model as a diffusers folder, with a checksum list so a changed model shows in review."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

CHECKSUMS = "CHECKSUMS.sha256"
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDPMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_components(
    folder: Path,
    tokenizer_files: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    scheduler: DDPMScheduler,
) -> None:
    """Save each component in its subfolder, as `from_pretrained` and StableDiffusionPipeline expect.

    `tokenizer_files` is the folder the build's tokenizer was loaded from, copied as it is.
    """
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    shutil.copytree(tokenizer_files, folder / "tokenizer")  # vocab.json + merges.txt, as openai's CLIP
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n", encoding="utf-8")


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative paths), the checksum list itself excepted."""
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != CHECKSUMS:
            sums[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def make_readable(folder: Path) -> None:
    """Files 0644 and folders 0755 under `folder`: safetensors' writer creates 0600 files, which a webui
    running as another user cannot read."""
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def write_checksums(folder: Path) -> Path:
    """`CHECKSUMS.sha256` in `sha256sum` format (check with `sha256sum -c CHECKSUMS.sha256`)."""
    lines = [f"{digest}  {name}" for name, digest in file_checksums(folder).items()]
    path = folder / CHECKSUMS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replace_folder(staging: Path, target: Path) -> None:
    """Swap a fully written staging folder into place, so an interrupted build never leaves half a model."""
    old = target.with_name(f".{target.name}-old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)
