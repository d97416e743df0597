"""Load an SDXL single file in Stability's SGM layout (what A1111's models/Stable-diffusion holds).

The architecture comes from the tensors' shapes (`sdxl_config`), the key renames from `sdxl_keys` and
diffusers' own UNet/VAE conversion. A single file ships no tokenizer: both come from `tokenizer` (a folder or
hub id; default CLIP ViT-L/14's from the hub cache), the second padding with `!` as OpenCLIP does. A model
trained to predict v says so by a `v_pred` marker key (or a sidecar SGM config with VScaling); `ztsnr`
adds the zero-terminal-SNR schedule.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inference.models import ldm_config, ldm_keys, open_clip_keys, sdxl_config, sdxl_keys
from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.errors import ModelLoadError
from inference.models.state_load import build_text_model, build_unet_and_vae
from inference.models.tokenizer_source import load_tokenizer

VERSION = "sdxl_base_v1-0"  # kohya's ss_base_model_version


def load_sdxl_single_file(
    path: Path,
    state: dict[str, torch.Tensor],
    tokenizer: str | None,
    original_config: str | Path | None = None,
) -> ModelBundle:
    """The SDXL model whose tensors `state` were read from `path`; `original_config` (an SGM config)
    overrides the sidecar `.yaml`."""
    config_path = Path(original_config).expanduser() if original_config else ldm_config.sidecar_yaml(path)
    settings = sdxl_config.read_settings(config_path)
    where = str(config_path) if config_path else "the weights' shapes and SDXL base's defaults"
    hint = (
        f"The architecture came from {where}; a model whose heads or norm groups differ from SDXL base's "
        f"needs its SGM config next to it as {path.with_suffix('.yaml').name}."
    )
    tok = load_tokenizer(tokenizer or ldm_config.CLIP_L)
    tok_2 = open_clip_keys.open_clip_tokenizer(copy.deepcopy(tok))
    text_encoder, text_encoder_2 = _text_encoders(state, settings, (tok, tok_2), path, hint)
    unet, vae = _unet_and_vae(state, settings, int(text_encoder_2.config.projection_dim), path, hint)
    scheduler = _noise_scheduler(state, settings)
    return ModelBundle(
        unet, vae, text_encoder, tok, scheduler, str(path), VERSION,
        text_encoder_2=text_encoder_2, tokenizer_2=tok_2,
    )  # fmt: skip


def _unet_and_vae(
    state: dict[str, torch.Tensor], settings: sdxl_config.SdxlSettings, pooled: int, path: Path, hint: str
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """The UNet and VAE, configs read from the shapes; `pooled` is bigG's projected width."""
    try:
        unet_cfg = sdxl_config.unet_config(state, settings, pooled)
        vae_cfg = sdxl_config.vae_config(state, settings)
    except (KeyError, StopIteration, IndexError) as error:
        missing = str(error) or "transformer weights"
        raise ModelLoadError(
            f"{path} is an SDXL checkpoint with incomplete UNet or VAE weights (no {missing}); check that "
            "the download finished."
        ) from error
    try:
        unet, vae = build_unet_and_vae(state, unet_cfg, vae_cfg, path, hint)
    except ValueError as error:  # e.g. widths that SDXL's 32 norm groups do not divide
        raise ModelLoadError(f"{path}: cannot build the architecture ({error}). {hint}") from error
    return unet, vae


def _noise_scheduler(state: dict[str, torch.Tensor], settings: sdxl_config.SdxlSettings) -> DDPMScheduler:
    """SDXL's training schedule (SD's betas), predicting v and with zero terminal SNR where the file says."""
    v_pred, ztsnr = sdxl_keys.prediction_markers(state)
    prediction = "v_prediction" if v_pred or settings.predicts_v else "epsilon"
    return DDPMScheduler.from_config(
        sd_noise_scheduler().config, prediction_type=prediction, rescale_betas_zero_snr=ztsnr
    )


def _text_encoders(
    state: dict[str, torch.Tensor],
    settings: sdxl_config.SdxlSettings,
    tokenizers: tuple[CLIPTokenizer, CLIPTokenizer],
    path: Path,
    hint: str,
) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """CLIP ViT-L (quick-GELU) and OpenCLIP bigG with its projection (GELU), sized from their weights."""
    weights = sdxl_keys.clip_l_state(state)
    config = ldm_keys.clip_config(weights, _heads(settings.text_heads[0]), tokenizers[0], path)
    first = build_text_model(CLIPTextModel, config, weights, "text encoder", path, hint)
    weights_2 = sdxl_keys.big_g_state(state)
    overrides = open_clip_keys.text_overrides(_heads(settings.text_heads[1]))
    config_2 = ldm_keys.clip_config(weights_2, overrides, tokenizers[1], path)
    projection = weights_2.get("text_projection.weight")
    if projection is None:
        raise ModelLoadError(
            f"{path}: the second text encoder (`{sdxl_keys.BIG_G_PREFIX}*`) has no text_projection, which "
            "SDXL's pooled text needs; the file is incomplete."
        )
    config_2.projection_dim = int(projection.shape[0])
    second = build_text_model(
        CLIPTextModelWithProjection, config_2, weights_2, "second text encoder", path, hint
    )
    return first, second


def _heads(heads: int | None) -> dict[str, Any]:
    return {} if heads is None else {"num_attention_heads": int(heads)}
