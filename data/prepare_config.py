"""Typed configuration of `python -m data`: Hydra composes `configs/prepare.yaml`, `load_prepare_config`
validates it once into these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from data.folders import MAX_REPEATS
from data.typed_config import ConfigError, to_typed

CROP_MODES = ("center", "focus", "buckets", "none")
CAPTIONERS = ("none", "blip", "git", "wd14")
REG_SOURCES = ("none", "folder", "generate")


@dataclass
class CropConfig:
    mode: str = "center"  # center | focus (the most detailed window) | buckets (kohya's) | none (keep size)
    width: int = 512  # center / focus: output size
    height: int = 512
    max_resolution: int = 512  # buckets: area of max_resolution² (kohya --resolution)
    min_bucket_reso: int = 256  # kohya --min_bucket_reso
    max_bucket_reso: int = 1024  # kohya --max_bucket_reso
    bucket_reso_steps: int = 64  # kohya --bucket_reso_steps
    bucket_no_upscale: bool = False  # kohya --bucket_no_upscale


@dataclass
class CaptionerConfig:
    name: str = "none"  # none (caption files only) | blip | git | wd14
    model: str | None = None  # hub id or local folder
    batch_size: int = 8
    options: dict = field(default_factory=dict)  # the captioner's own settings (thresholds, beams, prefix)


@dataclass
class TagConfig:
    merge: dict | None = None  # trigger → tags it stands for: {Smith: [1boy, facial hair]}
    remove: list = field(default_factory=list)  # tags to drop
    synonyms: dict | None = None  # tag → canonical tag
    dedupe: bool = True
    prepend_class_word: bool = False  # put `class_word` right after the trigger
    keep_first: list = field(default_factory=list)  # tags moved to the front (for keep_tokens)
    underscores_to_spaces: bool = True


@dataclass
class RegularizationConfig:
    source: str = "none"  # none | folder (resize pictures from `path`) | generate (with the base model)
    path: str | None = None  # source=folder
    count: int = 0  # source=generate: how many; source=folder: at most this many (0 = all)
    model: str | None = None  # source=generate: diffusers folder, hub id or `toy`
    prompt: str = "a photo of ${class_word}"
    negative_prompt: str = ""
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = 0  # image i gets seed + i
    batch_size: int = 4


@dataclass
class PrepareConfig:
    source: str = "???"  # the folder of raw pictures: read only, never written
    out: str = "???"  # where train/, reg/, manifest.jsonl and report.md go
    trigger: str = "???"  # the subject's trigger word, e.g. Smith
    class_word: str = "???"  # its class, e.g. man
    repeats: int = 10  # kohya's `N_` folder prefix
    min_size: int = 256  # shorter side below this: skipped and reported
    near_duplicate_distance: int = 4  # perceptual-hash bits; 0 = exact duplicates only
    background: list = field(default_factory=lambda: [255, 255, 255])  # behind transparent pixels
    mirror: bool = False  # also write a horizontally mirrored copy of every picture
    overwrite: bool = False  # replace existing caption files' text with the captioner's
    seed: int = 0
    crop: CropConfig = field(default_factory=CropConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    tags: TagConfig = field(default_factory=TagConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(cfg: PrepareConfig) -> PrepareConfig:
    """Check values that types alone cannot; raise ConfigError naming the key and what to write."""
    for key in ("source", "out", "trigger", "class_word"):
        _check(getattr(cfg, key) not in ("???", "", None), f"{key} is not set: add {key}=... to the command")
    _check(1 <= cfg.repeats <= MAX_REPEATS, f"repeats={cfg.repeats} must be between 1 and {MAX_REPEATS}")
    _check(cfg.min_size >= 1, f"min_size={cfg.min_size} must be >= 1")
    _check(cfg.crop.mode in CROP_MODES, f"crop.mode={cfg.crop.mode!r}: choose one of {', '.join(CROP_MODES)}")
    _check(
        cfg.crop.width >= 8 and cfg.crop.height >= 8,
        f"crop size {cfg.crop.width}x{cfg.crop.height} is too small",
    )
    _check(
        cfg.captioner.name in CAPTIONERS,
        f"captioner.name={cfg.captioner.name!r}: choose one of {', '.join(CAPTIONERS)}",
    )
    _check(cfg.captioner.batch_size >= 1, "captioner.batch_size must be >= 1")
    reg = cfg.regularization
    _check(
        reg.source in REG_SOURCES,
        f"regularization.source={reg.source!r}: choose one of {', '.join(REG_SOURCES)}",
    )
    _check(
        reg.source != "folder" or bool(reg.path), "regularization.source=folder needs regularization.path=..."
    )
    if reg.source == "generate":
        _check(
            bool(reg.model), "regularization.source=generate needs regularization.model=<model folder or toy>"
        )
        _check(reg.count >= 1, "regularization.source=generate needs regularization.count >= 1")
    _check(
        len(cfg.background) == 3 and all(0 <= int(c) <= 255 for c in cfg.background),
        f"background={cfg.background} must be three numbers 0-255",
    )
    return cfg


def load_prepare_config(cfg: DictConfig) -> PrepareConfig:
    """Hydra's composed config → a validated PrepareConfig; ConfigError on unknown keys or bad values."""
    return validate(to_typed(PrepareConfig, cfg))
