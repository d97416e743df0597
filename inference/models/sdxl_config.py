"""The diffusers configs of an SDXL single file, read from its tensors' shapes.

Widths, levels, resnets per level, transformer depths, the cross-attention width, the size/crop embedding
and the VAE's geometry all show in the shapes, so fine-tunes and smaller variants of the SDXL architecture
load without a config. What no shape shows comes from a sidecar `<checkpoint>.yaml` in SGM's layout (as
sd_xl_base.yaml) when there is one, else from SDXL base: `network_config.params.num_head_channels` (64),
`model.params.scale_factor` (0.13025) and a v-predicting denoiser (`denoiser_config.params.scaling_config`
VScaling). LoraSmith also reads three keys SGM hard-codes, for non-standard models: the group-norm groups
of the UNet (`network_config.params.norm_num_groups`) and of the VAE (`first_stage_config.params.ddconfig.
norm_num_groups`), both 32 in SGM, and a text encoder's heads (`conditioner_config.params.emb_models[i].
params.num_attention_heads`, default width / 64).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from inference.models.errors import ModelLoadError
from inference.models.ldm_keys import UNET_PREFIX, VAE_PREFIX

State = dict[str, torch.Tensor]
SDXL_SCALE_FACTOR = 0.13025
SIZE_CROP_NUMBERS = 6  # original size, crop top-left and target size: two numbers each


@dataclass(frozen=True)
class SdxlSettings:
    """What the weights cannot show, with SDXL base's values."""

    num_head_channels: int = 64
    unet_norm_groups: int = 32
    vae_norm_groups: int = 32
    scale_factor: float = SDXL_SCALE_FACTOR
    predicts_v: bool = False
    text_heads: tuple[int | None, int | None] = (None, None)  # None: width / 64


def _get(config: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            config = config[key] if isinstance(config, list) and len(config) > key else None
        else:
            config = config.get(key) if isinstance(config, dict) else None
    return config


def read_settings(path: Path | None) -> SdxlSettings:
    """The settings in the SGM config at `path` (missing values keep SDXL base's); defaults without one."""
    if path is None:
        return SdxlSettings()
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadError(f"cannot read the model config {path}: {error}") from error
    params = _get(config, "model", "params")
    if not isinstance(_get(params, "network_config", "params"), dict):
        raise ModelLoadError(
            f"{path} is not an SDXL (SGM) model config: model.params.network_config.params is missing. Use "
            "the config the checkpoint was trained with (e.g. sd_xl_base.yaml), or remove the file."
        )
    net = _get(params, "network_config", "params")
    scaling = str(_get(params, "denoiser_config", "params", "scaling_config", "target") or "")
    embedders = _get(params, "conditioner_config", "params", "emb_models") or []
    base = SdxlSettings()
    return SdxlSettings(
        num_head_channels=int(net.get("num_head_channels", base.num_head_channels)),
        unet_norm_groups=int(net.get("norm_num_groups", base.unet_norm_groups)),
        vae_norm_groups=int(
            _get(params, "first_stage_config", "params", "ddconfig", "norm_num_groups")
            or base.vae_norm_groups
        ),
        scale_factor=float(params.get("scale_factor", base.scale_factor)),
        predicts_v="VScaling" in scaling,
        text_heads=(_text_heads(embedders, 0), _text_heads(embedders, 1)),
    )


def _text_heads(embedders: Any, index: int) -> int | None:
    heads = _get(embedders, index, "params", "num_attention_heads")
    return None if heads is None else int(heads)


def _indices(state: State, pattern: str) -> list[int]:
    regex = re.compile(re.escape(pattern) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state if (m := regex.match(key))})


def _levels(state: State) -> list[dict[str, int]]:
    """Per UNet level, from `input_blocks`: its width, resnet count and transformer depth (0: no attention)."""
    levels = [{"width": 0, "resnets": 0, "depth": 0}]
    for i in _indices(state, UNET_PREFIX + "input_blocks.")[1:]:
        block = f"{UNET_PREFIX}input_blocks.{i}."
        if block + "0.op.weight" in state:  # a downsampler closes the level
            levels.append({"width": 0, "resnets": 0, "depth": 0})
            continue
        level = levels[-1]
        level["width"] = int(state[block + "0.out_layers.3.weight"].shape[0])
        level["resnets"] += 1
        level["depth"] = len(_indices(state, block + "1.transformer_blocks."))
    return levels


def unet_config(state: State, settings: SdxlSettings, pooled: int) -> dict[str, Any]:
    """UNet2DConditionModel config of the SDXL UNet in `state`; `pooled` is bigG's projected width."""
    levels = _levels(state)
    resnets = {level["resnets"] for level in levels}
    mid_depth = len(_indices(state, UNET_PREFIX + "middle_block.1.transformer_blocks."))
    if len(resnets) != 1 or mid_depth != levels[-1]["depth"]:
        raise ModelLoadError(
            f"the UNet has {sorted(resnets)} resnets per level and a middle block {mid_depth} transformers "
            f"deep (last level: {levels[-1]['depth']}); diffusers' UNet needs one count and equal depths."
        )
    conv_in = state[UNET_PREFIX + "input_blocks.0.0.weight"]
    adm = int(state[UNET_PREFIX + "label_emb.0.0.weight"].shape[1])
    attention = [level["depth"] > 0 for level in levels]
    unet = {k: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    proj_in = next(v for k, v in unet.items() if k.endswith(".1.proj_in.weight"))
    to_k = next(v for k, v in unet.items() if k.endswith(".attn2.to_k.weight"))
    widths = [level["width"] for level in levels]
    return {
        "sample_size": 128,  # 1024 px
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(state[UNET_PREFIX + "out.2.weight"].shape[0]),
        "block_out_channels": widths,
        "layers_per_block": resnets.pop(),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "attention_head_dim": [max(w // settings.num_head_channels, 1) for w in widths],
        "transformer_layers_per_block": [level["depth"] or 1 for level in levels],
        "cross_attention_dim": int(to_k.shape[1]),
        "use_linear_projection": proj_in.ndim == 2,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": (adm - pooled) // SIZE_CROP_NUMBERS,
        "projection_class_embeddings_input_dim": adm,
        "norm_num_groups": settings.unet_norm_groups,
    }


def vae_config(state: State, settings: SdxlSettings) -> dict[str, Any]:
    """AutoencoderKL config of the VAE under `first_stage_model.` in `state`."""
    enc = VAE_PREFIX + "encoder."
    levels = _indices(state, enc + "down.")
    widths = [int(state[f"{enc}down.{n}.block.0.conv2.weight"].shape[0]) for n in levels]
    return {
        "sample_size": 1024,
        "in_channels": int(state[enc + "conv_in.weight"].shape[1]),
        "out_channels": int(state[VAE_PREFIX + "decoder.conv_out.weight"].shape[0]),
        "block_out_channels": widths,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "latent_channels": int(state[VAE_PREFIX + "decoder.conv_in.weight"].shape[1]),
        "layers_per_block": len(_indices(state, enc + "down.0.block.")),
        "norm_num_groups": settings.vae_norm_groups,
        "scaling_factor": settings.scale_factor,
    }
