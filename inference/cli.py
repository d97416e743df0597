"""`python -m inference`'s work: the typed config, the model it names, and a txt2img / img2img / hires fix run
written as PNGs."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm.auto import tqdm

from data.file_hash import short_file_hash
from data.typed_config import ConfigError, to_typed
from inference.components import BaseModel, vae_scale_factor
from inference.controlnet_render import check_units, controlled_renderer, infotext_fields, load_units
from inference.controlnet_units import ControlNetUnit
from inference.embeddings import EmbeddingDatabase
from inference.extra_networks import parse_prompt
from inference.hires import HiresParams, generate_hires_batch, hires_size
from inference.img2img import img2img, img2img_steps
from inference.infotext import format_infotext, hires_fields, img2img_fields, save_png
from inference.inpaint import Inpainter, load_mask
from inference.inpaint_config import InpaintConfig
from inference.inpainting_unet import for_txt2img, is_inpainting_unet
from inference.input_checks import check_finite, check_image_file, check_output_folder
from inference.model_upscale import ModelUpscaler, check_tiles, find_model_upscaler, missing_upscaler
from inference.models.loading import load_base_model
from inference.models.spec import BUILT_IN_MODELS, ModelConfig
from inference.prompt_loras import PromptLora, applied_loras, lora_hashes, patching_loras, resolve_loras
from inference.sdxl_embeddings import embedding_database
from inference.ti_hashes import ti_hashes
from inference.txt2img import MAX_SIDE, GenerationParams, generate_batch
from inference.upscalers import UPSCALERS, find_upscaler

MAX_SEED = 4294967294  # A1111's range for a random seed


# Free-text values: prompts, and names such as "Latent (antialiased)" that Hydra would read as a function call.
PROMPT_KEYS = ("prompt=", "negative_prompt=", "hires.prompt=", "hires.negative_prompt=", "hires.upscaler=")


def quote_prompt_overrides(
    argv: list[str], keys: tuple[str, ...] = PROMPT_KEYS, user_quotes: tuple[str, ...] = ("'", '"')
) -> list[str]:
    """Quote `prompt=…` / `negative_prompt=…` for Hydra, so `<lora:x:1>`, `(a:1.2)` and commas stay text.

    The hires prompts and upscaler too (all of `keys`). Values the user quoted already (starting with one of
    `user_quotes`) are left alone. Only backslashes before a quote or at the end are doubled: Hydra keeps
    every other backslash as written, so A1111's `\\(` escapes survive.
    """
    quoted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if arg.startswith(keys) and not value.startswith(user_quotes):
            value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


@dataclass
class HiresConfig:
    """The `hires:` group: A1111's hires fix ("Hires. fix"), a second, larger img2img pass after txt2img."""

    enabled: bool = False
    upscaler: str = "Latent"  # Latent, Latent (antialiased), ..., Lanczos, None, or a file in upscaler_dir
    scale: float = 2.0  # "Upscale by", used while resize_x and resize_y are 0
    resize_x: int = 0  # "Resize width to"; 0 with resize_y set: follows the aspect ratio
    resize_y: int = 0
    steps: int = 0  # 0: the first pass's steps
    denoising_strength: float = 0.7
    prompt: str = ""  # empty: the first pass's prompt
    negative_prompt: str = ""
    sampler: str = ""  # empty: the first pass's sampler

    def params(self, prompt: str | None = None, model_upscaler: ModelUpscaler | None = None) -> HiresParams:
        """The hires settings; `prompt` replaces the hires prompt (e.g. without its LoRA tags)."""
        return HiresParams(
            self.upscaler, self.scale, self.resize_x, self.resize_y, self.steps, self.denoising_strength,
            self.prompt if prompt is None else prompt, self.negative_prompt, self.sampler, model_upscaler,
        )  # fmt: skip


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
    exact_batch: bool = False  # one UNet call per image: image i is bit for bit the image rendered alone
    model: str = "toy"  # toy | toy_xl | tiny | sd15_arch | tiny_sdxl | a diffusers folder | a hub id | a .safetensors/.ckpt file
    vae: str | None = None  # VAE override: a file as in A1111's models/VAE, or a diffusers VAE folder
    tokenizer: str | None = None  # for single-file models, which ship none (default: CLIP ViT-L/14's)
    lora_dir: str | None = None
    embeddings_dir: str | None = None
    upscaler_dir: str = "models/ESRGAN"  # upscaler files (.pth/.safetensors) that hires.upscaler may name
    upscaler_tile: int = 192  # A1111's ESRGAN tile size; 0: one pass over the whole picture
    upscaler_tile_overlap: int = 8
    device: str = "auto"  # auto: cuda when available, else cpu
    out: str = "outputs/txt2img"
    init_image: str | None = None  # an image file: img2img from it instead of txt2img
    denoising_strength: float = 0.75  # img2img's; the hires pass has its own
    hires: HiresConfig = field(default_factory=HiresConfig)
    controlnet: list[ControlNetUnit] = field(default_factory=list)  # A1111's ControlNet units
    # img2img's "Inpaint": a mask and its settings
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)


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
    check_image_file("init_image", config.init_image)
    config.inpaint.validate(config.init_image)
    check_output_folder("out", config.out)
    check_finite(denoising_strength=config.denoising_strength, **{"hires.scale": config.hires.scale})
    check_units(config.controlnet)
    try:
        _params(config, config.prompt, 0).validate()
        _check_img2img_and_hires(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config


def _check_img2img_and_hires(config: RenderConfig) -> None:
    """Raise ValueError for img2img or hires settings no run can use."""
    if config.init_image is not None:
        if config.hires.enabled:
            raise ValueError("the hires fix is for txt2img: set hires.enabled=false or init_image=null")
        img2img_steps(config.steps, config.denoising_strength)
    if not config.hires.enabled:
        return
    hires = hires_params(config)
    hires.validate()
    width, height = hires_size(config.width, config.height, hires)
    if min(width, height) <= 0:
        raise ValueError(f"the hires fix would render {width}x{height}: raise hires.scale or the resize")
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"the hires fix would render {width}x{height}, more than {MAX_SIDE} px a side: lower hires.scale "
            "or the resize"
        )
    if _lora_tags(config.hires.prompt) not in ([], _lora_tags(config.prompt)):
        raise ValueError(
            "hires.prompt names other <lora:...> tags than prompt: one set of LoRAs applies to both passes, "
            "so repeat prompt's tags or leave them out of hires.prompt"
        )


def hires_params(config: Any, prompt: str | None = None) -> HiresParams:
    """`config.hires`'s settings with the upscaler file it names in `config.upscaler_dir`, if it names one.

    `config` has `hires`, `upscaler_dir`, `upscaler_tile` and `upscaler_tile_overlap` (the render and X/Y/Z
    configs). A name that is neither built in nor a file there is refused with ConfigError.
    """
    name, model = config.hires.upscaler, None
    if find_upscaler(name) is None:
        try:
            check_tiles(config.upscaler_tile, config.upscaler_tile_overlap)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        model = find_model_upscaler(
            name, config.upscaler_dir, config.upscaler_tile, config.upscaler_tile_overlap
        )
        if model is None:
            raise ConfigError(missing_upscaler("hires upscaler", name, config.upscaler_dir, UPSCALERS))
    return config.hires.params(prompt, model)


def _lora_tags(prompt: str) -> list[list[str]]:
    return [tag.items for tag in parse_prompt(prompt)[1].get("lora", [])]


def load_model(name: str, device: str, vae: str | None = None, tokenizer: str | None = None) -> BaseModel:
    """A built-in model by name, else a diffusers folder, hub id or single file; frozen and on `device`."""
    kind = name if name in BUILT_IN_MODELS else "pretrained"
    path = None if kind != "pretrained" else name
    bundle = load_base_model(ModelConfig(kind=kind, path=path, vae=vae, tokenizer=tokenizer))
    bundle.freeze()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for part in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2):
        if part is not None:  # SD 1/2 have no second text encoder
            part.to(device)
    return bundle


def model_fields(config: RenderConfig) -> dict[str, str | None]:
    """Infotext's "Model hash", "VAE hash" and "VAE" for files, as A1111 writes them (name without suffix)."""
    fields: dict[str, str | None] = {}
    if Path(config.model).is_file():
        fields["Model hash"] = short_file_hash(config.model)
    if config.vae:
        vae = Path(config.vae)
        fields["VAE hash"] = short_file_hash(vae) if vae.is_file() else None
        fields["VAE"] = vae.name if vae.is_dir() else vae.stem
    return fields


def model_name(config: RenderConfig, source: str) -> str:
    """The "Model" infotext value: a file's name without its suffix (as A1111), else the folder or id name."""
    path = Path(config.model)
    return path.stem if path.is_file() else Path(source).name or source


def _params(config: RenderConfig, prompt: str, seed: int, model_name: str | None = None) -> GenerationParams:
    return GenerationParams(
        prompt, config.negative_prompt, seed, config.steps, config.cfg_scale, config.width, config.height,
        config.clip_skip, config.sampler, model_name, config.rng, config.scheduler, config.emphasis,
        exact_batch=config.exact_batch,
    )  # fmt: skip


def _embeddings(model: BaseModel, folder: str | None) -> EmbeddingDatabase | None:
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise ConfigError(f"embeddings_dir {folder} is not a folder: give the folder of embedding files")
    database = embedding_database(model)  # SDXL's holds both encoders' vectors
    database.load_folder(folder)
    return database


def next_image_number(folder: Path) -> int:
    """One past the highest `NNNNN-` prefix in `folder`, so a new run never overwrites an old one (A1111)."""
    numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
    return max(numbers, default=-1) + 1


Renderer = Callable[[list[GenerationParams]], list[Image.Image]]


def _renderer(config: RenderConfig, model: BaseModel, embeddings: EmbeddingDatabase | None) -> Renderer:
    """What renders one batch: txt2img, img2img from `init_image`, or txt2img with the hires fix."""
    units, size = config.controlnet, (config.height, config.width)
    if config.init_image is not None:
        with Image.open(config.init_image) as opened:
            init = opened.convert("RGB")
        strength = config.denoising_strength
        if config.inpaint.mask is not None or is_inpainting_unet(model.unet):
            mask = load_mask(config.inpaint.mask)
            inpainter = Inpainter(
                model, init, mask, config.inpaint, strength, *size[::-1], embeddings=embeddings
            )
            inpainter.control = load_units(model, units, *size, crop=inpainter.mask_crop())
            return inpainter
        control = load_units(model, units, *size)
        return lambda batch: img2img(model, batch, init, strength, embeddings=embeddings, control=control)
    if config.hires.enabled:
        # The text encoder sees the hires prompt without tags, as it sees the first prompt.
        hires = hires_params(config, parse_prompt(config.hires.prompt)[0])
        control = load_units(model, units, *size, hires_size(config.width, config.height, hires))
        model = for_txt2img(model)  # an inpainting model renders txt2img with A1111's all-masked conditioning
        return lambda batch: generate_hires_batch(model, batch, hires, embeddings, control)
    control, model = load_units(model, units, *size), for_txt2img(model)
    if control is not None:
        return controlled_renderer(model, control, embeddings)
    return lambda batch: generate_batch(model, batch, embeddings)


def _mode_fields(
    config: RenderConfig, params: GenerationParams, render_batch: Renderer, model: BaseModel
) -> dict[str, Any]:
    """img2img's, inpainting's or the hires fix's infotext keys for an image of `params` (prompt as written)."""
    if isinstance(render_batch, Inpainter):
        return render_batch.fields
    if config.init_image is not None:
        return img2img_fields(config.denoising_strength)
    fields = hires_fields(params, hires_params(config)) if config.hires.enabled else {}
    if is_inpainting_unet(model.unet):  # A1111 writes it for txt2img on an inpainting model too
        fields["Conditional mask weight"] = str(float(config.inpaint.inpainting_mask_weight))
    return fields


def check_clip_skip(clip_skip: int, model: BaseModel) -> None:
    """clip_skip counts back from the text encoder's last layer, so it cannot exceed its layers (SDXL, with a
    second encoder, ignores it, as A1111 does by default)."""
    layers = model.text_encoder.config.num_hidden_layers
    if getattr(model, "text_encoder_2", None) is None and clip_skip > layers:
        raise ConfigError(
            f"clip_skip={clip_skip} is more than this model's {layers} text-encoder layers: use 1 to {layers}"
        )


def _mode_name(config: RenderConfig) -> str:
    return "img2img" if config.init_image is not None else "hires" if config.hires.enabled else "txt2img"


def render(config: RenderConfig) -> RenderResult:
    """Render batch_count x batch_size images (image i gets seed + i) into `config.out` with infotext."""
    start = time.perf_counter()
    plain_prompt, networks = parse_prompt(config.prompt)
    loras = resolve_loras(networks.get("lora", []), config.lora_dir)  # fail before the model loads
    model = load_model(config.model, config.device, config.vae, config.tokenizer)
    check_clip_skip(config.clip_skip, model)
    loras = patching_loras(model, loras)
    if vae_scale_factor(model) != 8:
        _params(config, plain_prompt, 0).validate(vae_scale_factor(model))
    embeddings = _embeddings(model, config.embeddings_dir)
    render_batch = _renderer(config, model, embeddings)
    first_seed = random.randrange(MAX_SEED) if config.seed == -1 else config.seed
    seeds = [first_seed + i for i in range(config.batch_count * config.batch_size)]
    name, file_fields = model_name(config, model.source), model_fields(config)
    crop = render_batch.mask_crop() if isinstance(render_batch, Inpainter) else None
    control_fields = infotext_fields(config.controlnet, config.height, config.width, crop)
    used_embeddings = ti_hashes(
        model.tokenizer, plain_prompt, config.negative_prompt, embeddings, config.steps
    )
    out = Path(config.out)
    number = next_image_number(out) if out.is_dir() else 0
    paths: list[Path] = []
    progress = tqdm(total=len(seeds), desc=_mode_name(config), unit="image")
    with applied_loras(model, loras), progress:
        for batch_start in range(0, len(seeds), config.batch_size):
            batch_seeds = seeds[batch_start : batch_start + config.batch_size]
            # The text encoder sees the prompt without tags; the infotext keeps them, as A1111 writes it.
            batch = [_params(config, plain_prompt, seed, name) for seed in batch_seeds]
            for params, image in zip(batch, render_batch(batch), strict=True):
                written = replace(params, prompt=config.prompt)
                mode_fields = _mode_fields(config, written, render_batch, model)
                extra = {**file_fields, **mode_fields, "Lora hashes": lora_hashes(loras)}
                extra["TI hashes"] = used_embeddings
                extra |= control_fields
                infotext = format_infotext(written, extra)
                paths.append(save_png(image, out / f"{number:05d}-{params.seed}.png", infotext))
                number += 1
            progress.update(len(batch))
    return RenderResult(paths, seeds, loras, time.perf_counter() - start)
