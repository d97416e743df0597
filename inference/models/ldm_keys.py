"""Key conversion from the original LDM checkpoint layout to diffusers / transformers state dicts.

An SD 1.x file holds the UNet under `model.diffusion_model.` (input_blocks / middle_block /
output_blocks), the VAE under `first_stage_model.` (encoder.down / mid.attn_1 as 1x1 convs / decoder.up)
and CLIP ViT-L under `cond_stage_model.transformer.`. The UNet and VAE renames are diffusers' own
(`diffusers.loaders.single_file_utils`), called with configs built locally, so nothing is downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTokenizer

from inference.models.errors import ModelLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_PREFIX = "conditioner.embedders."

State = dict[str, torch.Tensor]


def model_family(state: State, path: Path) -> str:
    """`sd1` (CLIP ViT-L text encoder) or `sd2` (OpenCLIP ViT-H); a clear error for anything else."""
    if not any(key.startswith(UNET_PREFIX) for key in state):
        raise ModelLoadError(
            f"{path} has no UNet weights (no `{UNET_PREFIX}*` keys), so it is not a Stable Diffusion "
            "checkpoint in the original layout. A LoRA, an embedding or a VAE goes elsewhere "
            "(a VAE file is given as model.vae)."
        )
    if any(key.startswith(SDXL_PREFIX) for key in state):
        raise ModelLoadError(
            f"{path} has SDXL text-encoder keys (`{SDXL_PREFIX}*`) but not both of SDXL's text encoders; "
            "the file is incomplete or an SDXL refiner, which is not supported."
        )
    if any(key.startswith(CLIP_PREFIX) for key in state):
        return "sd1"
    if any(key.startswith(OPEN_CLIP_PREFIX) for key in state):
        return "sd2"
    raise ModelLoadError(
        f"{path} has no text-encoder weights (`{CLIP_PREFIX}*` or `{OPEN_CLIP_PREFIX}*`); "
        "a Stable Diffusion checkpoint needs one."
    )


def unet_input_channels(state: State) -> int | None:
    """The UNet's input channels as its first convolution shows them (9 for an inpainting model, as A1111
    tells them apart), or None when the checkpoint lacks that weight."""
    weight = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    return None if weight is None or weight.ndim != 4 else int(weight.shape[1])


def unet_state(state: State, config: dict[str, Any]) -> State:
    """The diffusers UNet2DConditionModel state dict of an LDM checkpoint (non-EMA weights, as A1111)."""
    return convert_ldm_unet_checkpoint(state, config)


def vae_state(state: State, config: dict[str, Any]) -> State:
    """The diffusers AutoencoderKL state dict of a full checkpoint or a VAE file (prefixed or not).

    A file already in diffusers' layout (`encoder.down_blocks.*`) is returned as it is.
    """
    if any(key.startswith("encoder.down_blocks.") for key in state):
        return dict(state)
    ldm = {k: v for k, v in state.items() if not k.startswith(("loss.", "model_ema."))}
    return convert_ldm_vae_checkpoint(ldm, config)


def clip_state(state: State) -> State:
    """CLIP text-encoder weights without `cond_stage_model.transformer.` and `text_model.` prefixes."""
    out: State = {}
    for key, value in state.items():
        if not key.startswith(CLIP_PREFIX):
            continue
        bare = key[len(CLIP_PREFIX) :].removeprefix("text_model.")
        if bare != "embeddings.position_ids":  # a buffer, rebuilt by the model
            out[bare] = value
    return out


def clip_config(
    weights: State, overrides: dict[str, Any], tokenizer: CLIPTokenizer, path: Path
) -> CLIPTextConfig:
    """The CLIPTextConfig that fits `weights` (bare keys): sizes read from tensor shapes."""
    try:
        vocab, hidden = weights["embeddings.token_embedding.weight"].shape
        positions = weights["embeddings.position_embedding.weight"].shape[0]
        intermediate = weights["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ModelLoadError(
            f"{path}: the text encoder is incomplete (no {error.args[0]} after conversion)."
        ) from error
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=max(layers) + 1,
        num_attention_heads=int(overrides.get("num_attention_heads", max(hidden // 64, 1))),
        max_position_embeddings=positions,
        projection_dim=hidden,
        hidden_act=str(overrides.get("hidden_act", "quick_gelu")),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
