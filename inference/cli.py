"""`python -m inference`'s work: the typed config, the model it names, and a txt2img run written as PNGs."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from data.typed_config import ConfigError, to_typed
from inference.components import BaseModel, vae_scale_factor
from inference.embeddings import EmbeddingDatabase
from inference.extra_networks import parse_prompt
from inference.infotext import format_infotext, save_png
from inference.prompt_loras import PromptLora, applied_loras, lora_hashes, resolve_loras
from inference.txt2img import GenerationParams, generate_batch

BUILT_IN_MODELS = ("toy", "tiny", "sd15_arch")  # names that are not read as a folder or hub id
MAX_SEED = 4294967294  # A1111's range for a random seed


PROMPT_KEYS = ("prompt=", "negative_prompt=")


def quote_prompt_overrides(argv: list[str]) -> list[str]:
    """Quote `prompt=…` / `negative_prompt=…` for Hydra, so `<lora:x:1>`, `(a:1.2)` and commas stay text.

    Values the user quoted already are left alone. Only backslashes before a quote or at the end are doubled:
    Hydra keeps every other backslash as written, so A1111's `\\(` escapes survive.
    """
    quoted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if arg.startswith(PROMPT_KEYS) and not value.startswith(("'", '"')):
            value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


@dataclass
class RenderConfig:
    """configs/inference/txt2img.yaml, typed. Sampler and scheduler take A1111's names."""

    prompt: str
    negative_prompt: str = ""
    sampler: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1  # -1: a random seed, as in A1111
    width: int = 64
    height: int = 64
    batch_size: int = 1
    batch_count: int = 1
    clip_skip: int = 1
    rng: str = "CPU"
    emphasis: str = "Original"
    model: str = "toy"  # toy | tiny | sd15_arch | a diffusers folder | a hub id
    lora_dir: str | None = None
    embeddings_dir: str | None = None
    device: str = "auto"  # auto: cuda when available, else cpu
    out: str = "outputs/txt2img"


@dataclass
class RenderResult:
    """What a run wrote: one path per image, in seed order."""

    paths: list[Path]
    seeds: list[int]
    loras: list[PromptLora]
    seconds: float


def load_render_config(cfg: DictConfig) -> RenderConfig:
    """The typed config, with values no image can be made from refused as ConfigError."""
    config = to_typed(RenderConfig, cfg)
    if config.batch_size < 1 or config.batch_count < 1:
        raise ConfigError(
            f"batch_size and batch_count must be at least 1, got {config.batch_size}, {config.batch_count}"
        )
    if config.seed < -1:
        raise ConfigError(f"seed must be -1 (random) or a non-negative number, got {config.seed}")
    try:
        _params(config, config.prompt, 0).validate()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config


def load_model(name: str, device: str) -> BaseModel:
    """A built-in model by name, else a diffusers folder or hub id; frozen and moved to `device`."""
    from train.config import ModelConfig
    from train.models.loading import load_base_model

    kind = name if name in BUILT_IN_MODELS else "pretrained"
    bundle = load_base_model(ModelConfig(kind=kind, path=None if kind != "pretrained" else name))
    bundle.freeze()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for part in (bundle.unet, bundle.vae, bundle.text_encoder):
        part.to(device)
    return bundle


def _params(config: RenderConfig, prompt: str, seed: int, model_name: str | None = None) -> GenerationParams:
    return GenerationParams(
        prompt, config.negative_prompt, seed, config.steps, config.cfg_scale, config.width, config.height,
        config.clip_skip, config.sampler, model_name, config.rng, config.scheduler, config.emphasis,
    )  # fmt: skip


def _embeddings(model: BaseModel, folder: str | None) -> EmbeddingDatabase | None:
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise ConfigError(f"embeddings_dir {folder} is not a folder: give the folder of embedding files")
    database = EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
    database.load_folder(folder)
    return database


def next_image_number(folder: Path) -> int:
    """One past the highest `NNNNN-` prefix in `folder`, so a new run never overwrites an old one (A1111)."""
    numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


def render(config: RenderConfig) -> RenderResult:
    """Render batch_count x batch_size images (image i gets seed + i) into `config.out` with infotext."""
    start = time.perf_counter()
    plain_prompt, networks = parse_prompt(config.prompt)
    loras = resolve_loras(networks.get("lora", []), config.lora_dir)  # fail before the model loads
    model = load_model(config.model, config.device)
    if vae_scale_factor(model) != 8:
        _params(config, plain_prompt, 0).validate(vae_scale_factor(model))
    embeddings = _embeddings(model, config.embeddings_dir)
    first_seed = random.randrange(MAX_SEED) if config.seed == -1 else config.seed
    seeds = [first_seed + i for i in range(config.batch_count * config.batch_size)]
    model_name = Path(model.source).name or model.source
    extra = {"Lora hashes": lora_hashes(loras)}
    out = Path(config.out)
    number = next_image_number(out) if out.is_dir() else 0
    paths: list[Path] = []
    with applied_loras(model, loras), tqdm(total=len(seeds), desc="txt2img", unit="image") as progress:
        for batch_start in range(0, len(seeds), config.batch_size):
            batch_seeds = seeds[batch_start : batch_start + config.batch_size]
            # The text encoder sees the prompt without tags; the infotext keeps them, as A1111 writes it.
            batch = [_params(config, plain_prompt, seed, model_name) for seed in batch_seeds]
            for params, image in zip(batch, generate_batch(model, batch, embeddings), strict=True):
                infotext = format_infotext(replace(params, prompt=config.prompt), extra)
                paths.append(save_png(image, out / f"{number:05d}-{params.seed}.png", infotext))
                number += 1
            progress.update(len(batch))
    return RenderResult(paths, seeds, loras, time.perf_counter() - start)
