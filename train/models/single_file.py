"""Load a single-file Stable Diffusion checkpoint in the original (CompVis/LDM) layout, as A1111 does.

The file (`.safetensors`, or a `.ckpt` read weights-only) gives the weights; the architecture comes from
a sidecar `<checkpoint>.yaml` (LDM original config) or, without one, SD 1.5's. A single file has no
tokenizer: it comes from `tokenizer` (a folder or hub id; default CLIP ViT-L/14's from the hub cache).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from train.errors import ModelLoadError
from train.models import ldm_config, ldm_keys
from train.models.bundle import ModelBundle
from train.models.checkpoint_file import read_state_dict
from train.models.state_load import build_with_weights
from train.models.tokenizer_source import load_tokenizer


def load_single_file(
    path: str | Path, tokenizer: str | None = None, original_config: str | Path | None = None
) -> ModelBundle:
    """The SD 1.x model in checkpoint `path`; `original_config` overrides the sidecar `.yaml`."""
    path = Path(path).expanduser()
    state = read_state_dict(path)
    family = ldm_keys.model_family(state, path)
    if family == "sd2":
        raise ModelLoadError(
            f"{path} is an SD 2.x checkpoint (OpenCLIP text encoder); SD 2.x single files are not "
            "supported yet. Convert it to a diffusers folder and give that folder instead."
        )
    config_path = Path(original_config).expanduser() if original_config else ldm_config.sidecar_yaml(path)
    original = (
        ldm_config.read_original_config(config_path) if config_path else ldm_config.default_original_config()
    )
    where = str(config_path) if config_path else "the SD 1.5 architecture (no sidecar .yaml)"
    hint = (
        f"The architecture came from {where}; put the checkpoint's original config next to it as "
        f"{path.with_suffix('.yaml').name} if it is not a standard SD 1.x model."
    )
    tok = load_tokenizer(tokenizer or ldm_config.default_tokenizer(original))
    unet_cfg, vae_cfg = _diffusers_configs(original, where)
    unet = build_with_weights(
        lambda: UNet2DConditionModel.from_config(unet_cfg),
        ldm_keys.unet_state(state, unet_cfg),
        "UNet",
        path,
        hint,
    )
    vae = build_with_weights(
        lambda: AutoencoderKL.from_config(vae_cfg), ldm_keys.vae_state(state, vae_cfg), "VAE", path, hint
    )
    text_encoder = _text_encoder(state, original, tok, path, hint)
    scheduler = ldm_config.noise_scheduler(original)
    return ModelBundle(unet, vae, text_encoder, tok, scheduler, source=str(path))


def _diffusers_configs(original: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return ldm_config.unet_config(original), ldm_config.vae_config(original)
    except (KeyError, TypeError) as error:
        raise ModelLoadError(
            f"the model config {where} lacks a needed value ({error}); compare it with SD 1.5's "
            "v1-inference.yaml (unet_config.params, first_stage_config.params.ddconfig)."
        ) from error


def _text_encoder(
    state: dict[str, Any], original: dict[str, Any], tokenizer: Any, path: Path, hint: str
) -> CLIPTextModel:
    weights = ldm_keys.clip_state(state)
    config = ldm_keys.clip_config(weights, ldm_config.text_encoder_overrides(original), tokenizer, path)
    if _nests_text_model():
        weights = {f"text_model.{key}": value for key, value in weights.items()}
    return build_with_weights(lambda: CLIPTextModel(config), weights, "text encoder", path, hint)


@functools.cache
def _nests_text_model() -> bool:
    """transformers < 5.6 nests CLIPTextModel's modules under `text_model.`; later versions do not."""
    small = CLIPTextConfig(
        vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1
    )
    with torch.device("meta"):
        return hasattr(CLIPTextModel(small), "text_model")
