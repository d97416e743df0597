"""SDXL in a diffusers folder or hub id: the second text encoder and tokenizer, when the model has them.

A diffusers SDXL model (stabilityai/stable-diffusion-xl-base-1.0 and its fine-tunes) lists `text_encoder_2`
(CLIPTextModelWithProjection, OpenCLIP bigG) and `tokenizer_2` in its model_index.json, with a subfolder each.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from inference.models.errors import ModelLoadError

SDXL_PARTS = ("text_encoder_2", "tokenizer_2")
SDXL_VERSION = "sdxl_base_v1-0"


def is_sdxl_folder(folder: Path) -> bool:
    """Whether the local diffusers folder is SDXL: its model_index.json or its subfolders say so."""
    index = folder / "model_index.json"
    listed = False
    if index.is_file():
        try:
            listed = "text_encoder_2" in json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot read {index}: {error}; the model folder is damaged.") from error
    return listed or (folder / "text_encoder_2").is_dir()


def check_sdxl_folder(folder: Path) -> None:
    """An SDXL folder has both second parts; name the missing ones."""
    missing = [name for name in SDXL_PARTS if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is an SDXL model folder (model_index.json lists text_encoder_2) but lacks "
            f"{', '.join(m + '/' for m in missing)}; copy the whole model folder."
        )


def is_sdxl_hub_id(repo: str, revision: str | None) -> bool:
    """Whether the hub id's model_index.json lists `text_encoder_2` (from the hub cache when offline)."""
    try:
        config = DiffusionPipeline.load_config(repo, revision=revision)
    except (OSError, ValueError):  # not reachable or no index: the SD loader reports what is wrong
        return False
    return "text_encoder_2" in config


def load_second_encoder(
    source: str, revision: str | None, variant: str | None
) -> tuple[CLIPTextModelWithProjection, CLIPTokenizer]:
    """SDXL's `text_encoder_2` and `tokenizer_2` from a diffusers folder or hub id (OSError when absent)."""
    encoder = CLIPTextModelWithProjection.from_pretrained(
        source, subfolder="text_encoder_2", revision=revision, variant=variant
    )
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", revision=revision)
    return encoder, tokenizer
