"""Load a base model from a diffusers folder, a hub id or a single-file checkpoint, or build one in code."""

from __future__ import annotations

import os
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.checkpoint_file import SINGLE_FILE_SUFFIXES
from inference.models.errors import ModelLoadError
from inference.models.sdxl_arch import build_sdxl_arch
from inference.models.sdxl_folder import (
    SDXL_VERSION,
    check_sdxl_folder,
    is_sdxl_folder,
    is_sdxl_hub_id,
    load_second_encoder,
)
from inference.models.single_file import load_single_file
from inference.models.spec import ModelConfig
from inference.models.tiny import build_sd15_arch, build_tiny
from inference.models.tiny_sdxl import build_tiny_sdxl
from inference.models.tokenizer_source import with_tokenizer
from inference.models.vae_override import with_vae

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")
TOY_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "toy"
TOY_XL_MODEL_DIR = TOY_MODEL_DIR.with_name("toy_xl")  # the toy SDXL (scripts/build_toy.py --sdxl)


def load_base_model(cfg: ModelConfig) -> ModelBundle:
    """The base model named by `cfg`, with the `cfg.vae` / `cfg.tokenizer` overrides applied."""
    bundle = _base_model(cfg)
    if cfg.vae:
        bundle = with_vae(bundle, cfg.vae)
    took_tokenizer = cfg.kind == "pretrained" and is_single_file(cfg.path)
    if cfg.tokenizer and not took_tokenizer:
        bundle = with_tokenizer(bundle, cfg.tokenizer)
    return bundle


def _base_model(cfg: ModelConfig) -> ModelBundle:
    """Built in code for tiny/sd15_arch/tiny_sdxl, the bundled toy models, else loaded from `cfg.path`."""
    if cfg.kind == "tiny":
        return build_tiny(cfg.init_seed)
    if cfg.kind == "sd15_arch":
        return build_sd15_arch(cfg.init_seed)
    if cfg.kind == "sdxl_arch":
        return build_sdxl_arch(cfg.init_seed)
    if cfg.kind == "tiny_sdxl":
        return build_tiny_sdxl(cfg.init_seed)
    if cfg.kind == "toy":  # the bundled model, through the same loader as any diffusers folder
        return load_pretrained(str(TOY_MODEL_DIR))
    if cfg.kind == "toy_xl":
        return load_pretrained(str(TOY_XL_MODEL_DIR))
    if is_single_file(cfg.path):
        return load_single_file(cfg.path or "", tokenizer=cfg.tokenizer)
    return load_pretrained(cfg.path or "", revision=cfg.revision, variant=cfg.variant)


def is_single_file(path: str | None) -> bool:
    """Whether `path` names a single-file checkpoint (by its suffix: .safetensors, .ckpt, .pt, ...)."""
    return path is not None and Path(path).suffix.lower() in SINGLE_FILE_SUFFIXES


def _check_local_folder(folder: Path) -> None:
    missing = [name for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a diffusers model folder: missing {', '.join(m + '/' for m in missing)}. "
            "Give the folder that holds unet/, vae/, text_encoder/ and tokenizer/ (e.g. a snapshot of "
            "runwayml/stable-diffusion-v1-5), or a hub id."
        )


def load_pretrained(path: str, revision: str | None = None, variant: str | None = None) -> ModelBundle:
    """Load the SD components from a diffusers folder, a hub id (the hub cache when offline) or a single file."""
    if is_single_file(path):
        return load_single_file(path)
    local = Path(path).expanduser()
    if local.exists():
        _check_local_folder(local)
        source, sdxl = str(local), is_sdxl_folder(local)
        if sdxl:
            check_sdxl_folder(local)
    else:
        source, sdxl = path, is_sdxl_hub_id(path, revision)
    kwargs = {"revision": revision}
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", variant=variant, **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", variant=variant, **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", variant=variant, **kwargs
        )
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        second = load_second_encoder(source, revision, variant) if sdxl else (None, None)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = " (HF_HUB_OFFLINE is set, so only the local hub cache is searched)" if offline else ""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"cannot load base model {path!r}{hint}: {first_line}. Give a diffusers folder or a hub id."
        ) from error
    scheduler = _training_scheduler(source, revision)
    version = SDXL_VERSION if sdxl else "sd_v1"
    return ModelBundle(
        unet, vae, text_encoder, tokenizer, scheduler, path, version,
        text_encoder_2=second[0], tokenizer_2=second[1],
    )  # fmt: skip


def _training_scheduler(source: str, revision: str | None) -> DDPMScheduler:
    """DDPM with the model's own betas when it ships a scheduler config, SD 1.x's otherwise."""
    try:
        return DDPMScheduler.from_pretrained(source, subfolder="scheduler", revision=revision)
    except (OSError, ValueError):
        return sd_noise_scheduler()
