"""`python -m inference.extras`'s work: the typed config (configs/inference/extras.yaml), its checks, the run.

As A1111's Extras "Scale by": the upscaler's `upscale` (passes until int(side * scale) // 8 * 8 is reached,
then Lanczos to that size). The PNG keeps the source's `parameters` chunk and adds the Extras infotext under
`postprocessing` and `extras`, the chunks A1111 writes it to.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from data.atomic import write_bytes_atomic
from data.typed_config import ConfigError, to_typed
from inference.input_checks import check_image_file, check_output_folder
from inference.model_upscale import (
    ModelUpscaler,
    check_tiles,
    find_model_upscaler,
    missing_upscaler,
    upscale_by,
)

BUILT_IN = ("Lanczos",)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class ExtrasConfig:
    """configs/inference/extras.yaml, typed."""

    image: str
    upscaler: str
    scale: float = 2.0
    upscaler_dir: str = "models/ESRGAN"
    upscaler_tile: int = 192
    upscaler_tile_overlap: int = 8
    device: str = "auto"
    out: str = "outputs/extras"


@dataclass
class ExtrasResult:
    """What a run wrote: one output per source picture, in order."""

    sources: list[Path]
    paths: list[Path]
    upscaler: str
    seconds: float


def source_pictures(image: str) -> list[Path]:
    """`image` itself, or the pictures in the folder `image`, sorted by name."""
    path = Path(image)
    if path.is_dir():
        pictures = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
        if not pictures:
            raise ConfigError(f"image={image} is a folder without pictures ({', '.join(PICTURE_SUFFIXES)})")
        return pictures
    check_image_file("image", image)
    return [path]


def load_extras_config(cfg: DictConfig) -> ExtrasConfig:
    """The typed config; values no upscale can run with are refused as ConfigError."""
    config = to_typed(ExtrasConfig, cfg)
    if not math.isfinite(config.scale) or config.scale <= 0:
        raise ConfigError(f"scale must be a number above 0, got {config.scale}")
    try:
        check_tiles(config.upscaler_tile, config.upscaler_tile_overlap)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    check_output_folder("out", config.out)
    for source in source_pictures(config.image):
        with Image.open(source) as picture:
            size = (int(picture.width * config.scale // 8 * 8), int(picture.height * config.scale // 8 * 8))
        if min(size) <= 0:
            raise ConfigError(f"scale={config.scale} makes {source} {size[0]}x{size[1]}: raise scale")
    if config.upscaler not in BUILT_IN and find_upscaler_or_none(config) is None:
        raise ConfigError(missing_upscaler("upscaler", config.upscaler, config.upscaler_dir, BUILT_IN))
    return config


def find_upscaler_or_none(config: ExtrasConfig) -> ModelUpscaler | None:
    """The upscaler file `config.upscaler` names (read and recognised), or None."""
    return find_model_upscaler(
        config.upscaler, config.upscaler_dir, config.upscaler_tile, config.upscaler_tile_overlap
    )


def lanczos_pass(image: Image.Image, scale: float) -> Image.Image:
    """One pass of A1111's Lanczos upscaler: (w, h) → (int(w*scale), int(h*scale))."""
    size = (int(image.width * scale), int(image.height * scale))
    return image.resize(size, resample=Image.Resampling.LANCZOS)


def extras_infotext(scale: float, upscaler: str) -> str:
    """A1111's Extras infotext for "Scale by": `Postprocess upscale by: 2, Postprocess upscaler: NAME`."""
    # Written here rather than with inference.infotext, whose imports (the whole engine) take seconds.
    by = str(int(scale)) if scale.is_integer() else str(scale)
    name = json.dumps(upscaler, ensure_ascii=False) if any(mark in upscaler for mark in ",:\n") else upscaler
    return f"Postprocess upscale by: {by}, Postprocess upscaler: {name}"


def save_extras_png(image: Image.Image, path: Path, infotext: str, source_parameters: str | None) -> Path:
    """Write a PNG atomically with the source's `parameters` (if any) and the Extras infotext."""
    info = PngInfo()
    if source_parameters is not None:
        info.add_text("parameters", source_parameters)
    info.add_text("postprocessing", infotext)
    info.add_text("extras", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return write_bytes_atomic(path, buffer.getvalue())


def _output_paths(config: ExtrasConfig, sources: list[Path]) -> list[Path]:
    """A folder's pictures keep their names; a single picture becomes the next NNNNN.png in `out`."""
    out = Path(config.out)
    if Path(config.image).is_dir():
        return [out / f"{source.stem}.png" for source in sources]
    numbers = [int(m.group(1)) for p in out.glob("*.png") if (m := re.fullmatch(r"(\d{5})", p.stem))]
    return [out / f"{max(numbers, default=-1) + 1:05d}.png"]


def run_extras(config: ExtrasConfig) -> ExtrasResult:
    """Upscale every source picture into `config.out`."""
    start = time.perf_counter()
    sources = source_pictures(config.image)
    model = None if config.upscaler in BUILT_IN else find_upscaler_or_none(config)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    infotext = extras_infotext(config.scale, config.upscaler)
    paths = []
    for source, path in zip(sources, _output_paths(config, sources), strict=True):
        with Image.open(source) as opened:
            parameters = opened.info.get("parameters")
            picture = opened.convert("RGB")
        if model is not None:
            upscaled = model.upscale(picture, config.scale, device)
        else:
            upscaled = upscale_by(picture, config.scale, lambda im: lanczos_pass(im, config.scale))
        paths.append(save_extras_png(upscaled, path, infotext, parameters))
    return ExtrasResult(sources, paths, config.upscaler, time.perf_counter() - start)
