"""`model=sdxl_arch`: SDXL base 1.0's real architecture from the configs in models/sdxl_arch, no weights.

Random weights from a seed (about 3.5 B float32 parameters, 14 GB), or, with `meta=True`, every module on
PyTorch's meta device: the names and shapes without memory, for key-name checks (LoRA keys, converters).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inference.models.bundle import ModelBundle
from inference.models.open_clip_keys import open_clip_tokenizer
from inference.models.tokenizer import build_tokenizer

SDXL_ARCH_DIR = Path(__file__).resolve().parents[2] / "models" / "sdxl_arch"


def _tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as folder:
        return build_tokenizer(folder)


def _text_config(folder: Path, name: str, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """The shipped text-encoder config with the local tokenizer's special-token ids."""
    values = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
    values.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextConfig(**values)


def build_sdxl_arch(seed: int = 0, meta: bool = False, folder: Path = SDXL_ARCH_DIR) -> ModelBundle:
    """SDXL base's UNet, VAE and both text encoders with random weights (or none, on the meta device)."""
    tokenizer, tokenizer_2 = _tokenizer(), open_clip_tokenizer(_tokenizer())
    te_config = _text_config(folder, "text_encoder", tokenizer)
    te_config_2 = _text_config(folder, "text_encoder_2", tokenizer_2)
    place = torch.device("meta") if meta else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), place:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(te_config)
        text_encoder_2 = CLIPTextModelWithProjection(te_config_2)
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(folder / "scheduler"))
    return ModelBundle(
        unet, vae, text_encoder, tokenizer, scheduler, "sdxl_arch", "sdxl_base_v1-0",
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )  # fmt: skip
