"""`scripts/build_toy.py --sdxl`: the toy SDXL, `models/toy_xl`, on the toy model's VAE and tokenizer.

The VAE (with its own latent scaling factor, not SDXL's 0.13025: the toy latents are what they are) and
the tokenizer files come from `models/toy` unchanged; the UNet and both text encoders are trained here on
the same base-world pictures, caption variants and caption dropout as the toy model's stage 2.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTokenizer

from data.toy.caption_variants import caption_variants
from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.sdxl_folder import SDXL_VERSION
from train.toy_base.denoiser_training import encode_pool
from train.toy_base.evaluation import base_fidelity, fidelity_prompts, save_fidelity_grid
from train.toy_base.export import make_readable, replace_folder, write_checksums
from train.toy_base.pictures import base_world_pool
from train.toy_base.sdxl_architecture import toy_xl_text_encoders, toy_xl_unet
from train.toy_base.sdxl_readme import sdxl_readme
from train.toy_base.sdxl_training import train_sdxl_denoiser

REPO = Path(__file__).resolve().parents[2]
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": True,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "DDPMScheduler"],  # as saved: SD's training schedule, like models/toy
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


@dataclass
class SdxlBuildSettings:
    """Everything that decides the toy SDXL; the same settings (and models/toy) give the same model."""

    out: Path = field(default_factory=lambda: REPO / "models" / "toy_xl")
    base: Path = field(default_factory=lambda: REPO / "models" / "toy")  # VAE and tokenizer from here
    seed: int = 0
    base_pictures: int = 20000
    unet_steps: int = 2500  # as models/toy; a step costs 0.86x the toy UNet's (measured side by side)
    unet_batch: int = 64
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    caption_variants: int = 6
    fidelity_prompts: int = 32
    fidelity_seeds: int = 4


def _tokenizers(base: Path) -> tuple[CLIPTokenizer, CLIPTokenizer]:
    """The toy tokenizer twice: the second pads with "!" (id 0), as SDXL's OpenCLIP tokenizer."""
    first = CLIPTokenizer.from_pretrained(base / "tokenizer")
    second = CLIPTokenizer.from_pretrained(base / "tokenizer")
    second.pad_token = "!"
    return first, second


def _initial_model(settings: SdxlBuildSettings) -> ModelBundle:
    tokenizer, tokenizer_2 = _tokenizers(settings.base)
    torch.manual_seed(settings.seed)
    text_encoder, text_encoder_2 = toy_xl_text_encoders(tokenizer, tokenizer_2)
    vae = AutoencoderKL.from_pretrained(settings.base / "vae").eval().requires_grad_(False)
    return ModelBundle(
        toy_xl_unet(), vae, text_encoder, tokenizer, sd_noise_scheduler(), "toy_xl", SDXL_VERSION,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )  # fmt: skip


def _train(model: ModelBundle, settings: SdxlBuildSettings, generator: torch.Generator) -> list[float]:
    pictures, scenes = base_world_pool(settings.base_pictures, settings.seed)
    rng = np.random.default_rng([settings.seed, 21])
    captions = [caption_variants(scene, rng, settings.caption_variants) for scene in scenes]
    pool = encode_pool(model.vae, model.tokenizer, pictures, captions)
    hyper = {
        "steps": settings.unet_steps,
        "batch": settings.unet_batch,
        "lr": settings.unet_lr,
        "caption_dropout": settings.caption_dropout,
    }
    encoders = (model.text_encoder, model.text_encoder_2)
    scale = model.vae.config.scaling_factor
    return train_sdxl_denoiser(
        model.unet, encoders, model.tokenizer_2, pool, model.noise_scheduler, scale, hyper, generator
    )


def _write(folder: Path, model: ModelBundle, base: Path) -> None:
    """The diffusers SDXL layout; VAE and first tokenizer are the toy model's files, copied as they are."""
    model.unet.save_pretrained(folder / "unet")
    shutil.copytree(base / "vae", folder / "vae")
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.text_encoder_2.save_pretrained(folder / "text_encoder_2")
    shutil.copytree(base / "tokenizer", folder / "tokenizer")
    shutil.copytree(base / "tokenizer", folder / "tokenizer_2")
    config = json.loads((folder / "tokenizer_2" / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["pad_token"] = "!"
    (folder / "tokenizer_2" / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )
    model.noise_scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n", encoding="utf-8")


def build_toy_xl(settings: SdxlBuildSettings, command: str) -> dict:
    """Train the toy SDXL, measure base fidelity through the engine, write `settings.out`; the report."""
    generator = torch.Generator().manual_seed(settings.seed)
    model = _initial_model(settings)
    start = time.time()
    losses = _train(model, settings, generator)
    timings = {"unet_minutes": round((time.time() - start) / 60, 2)}
    start = time.time()
    prompts = fidelity_prompts(settings.fidelity_prompts)
    seeds = list(range(1, settings.fidelity_seeds + 1))
    fidelity, rows = base_fidelity(model, prompts, seeds)
    timings["eval_minutes"] = round((time.time() - start) / 60, 2)
    staging = settings.out.with_name(f".{settings.out.name}-staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _write(staging, model, settings.base)
    save_fidelity_grid(rows, prompts, seeds, staging / "base_grid.png")
    tail = losses[-100:]
    report = {
        "base_fidelity": round(fidelity, 4),
        "denoiser_final_loss": round(sum(tail) / max(len(tail), 1), 5),
        "latent_scaling_factor": round(model.vae.config.scaling_factor, 5),
        **timings,
    }
    settings_text = {k: v for k, v in asdict(settings).items() if k not in ("out", "base")}
    (staging / "README.md").write_text(sdxl_readme(model, command, report, settings_text), encoding="utf-8")
    make_readable(staging)
    write_checksums(staging)
    replace_folder(staging, settings.out)
    return report
