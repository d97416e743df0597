"""The "original config" of an LDM checkpoint (e.g. v1-inference.yaml) and the diffusers configs it implies.

As in AUTOMATIC1111, a checkpoint `model.safetensors` may have a sidecar `model.yaml` next to it; without
one, the architecture of the family its weights show is used: SD 1.5's (v1-inference.yaml, written below as
a dict) or SD 2's 512 epsilon model (v2-inference.yaml). Whether an SD 2 model predicts v
(v2-inference-v.yaml, `parameterization: v`) cannot be told from its weights. Two keys that LDM
hard-codes may be added for non-standard models (they are LoraSmith's, other tools ignore them):
`first_stage_config.params.ddconfig.norm_num_groups` (VAE group-norm groups, LDM: 32) and
`cond_stage_config.params.num_attention_heads` (text-encoder heads, default width / 64).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from diffusers import DDPMScheduler

from inference.models.bundle import sd_noise_scheduler
from inference.models.errors import ModelLoadError

CLIP_L = "openai/clip-vit-large-patch14"

# The values of CompVis' configs/stable-diffusion/v1-inference.yaml that decide the architecture.
SD15_ORIGINAL_CONFIG: dict[str, Any] = {
    "model": {
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "timesteps": 1000,
            "image_size": 64,
            "channels": 4,
            "scale_factor": 0.18215,
            "unet_config": {
                "params": {
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_heads": 8,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 768,
                    "legacy": False,
                }
            },
            "first_stage_config": {
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                    },
                }
            },
            "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
        }
    }
}


# What v2-inference.yaml (SD 2.x, 512, epsilon) changes in v1-inference.yaml: heads of 64 channels,
# linear transformer projections, OpenCLIP ViT-H's 1024-wide text read at its penultimate layer.
SD2_UNET_CHANGES: dict[str, Any] = {
    "num_head_channels": 64,
    "use_linear_in_transformer": True,
    "context_dim": 1024,
}
SD2_COND_STAGE: dict[str, Any] = {
    "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
    "params": {"freeze": True, "layer": "penultimate"},
}


def sidecar_yaml(checkpoint: Path) -> Path | None:
    """`model.yaml` next to `model.safetensors` when it exists (A1111's convention)."""
    candidate = checkpoint.with_suffix(".yaml")
    return candidate if candidate.is_file() else None


def read_original_config(path: Path) -> dict[str, Any]:
    """The parsed LDM config at `path`, checked for the parts the loader needs."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadError(f"cannot read the model config {path}: {error}") from error
    for part in ("unet_config", "first_stage_config"):
        if not isinstance(_get(config, "model", "params", part, "params"), dict):
            raise ModelLoadError(
                f"{path} is not an LDM model config: model.params.{part}.params is missing. Use the "
                "original config the checkpoint was trained with (e.g. v1-inference.yaml), or remove the "
                "file to use the SD 1.5 architecture."
            )
    return config


def default_original_config(family: str = "sd1") -> dict[str, Any]:
    """A fresh copy of SD 1.5's original config, or of SD 2's v2-inference.yaml for family `sd2`."""
    config = copy.deepcopy(SD15_ORIGINAL_CONFIG)
    if family == "sd2":
        params = config["model"]["params"]
        unet = params["unet_config"]["params"]
        del unet["num_heads"]
        unet.update(SD2_UNET_CHANGES)
        params["cond_stage_config"] = copy.deepcopy(SD2_COND_STAGE)
    return config


def _get(config: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def _params(original: dict[str, Any], part: str) -> dict[str, Any]:
    return _get(original, "model", "params", part, "params") or {}


def unet_config(original: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel config for the `unet_config` of an LDM config."""
    p = _params(original, "unet_config")
    widths = [p["model_channels"] * m for m in p["channel_mult"]]
    attention = [2**level in p["attention_resolutions"] for level in range(len(widths))]
    if "num_head_channels" in p and p.get("num_heads", -1) in (-1, None):
        heads: int | list[int] = [w // p["num_head_channels"] for w in widths]
    else:
        heads = p["num_heads"]
    context = p.get("context_dim")
    return {
        "sample_size": _get(original, "model", "params", "image_size") or 64,
        "in_channels": p["in_channels"],
        "out_channels": p["out_channels"],
        "block_out_channels": widths,
        "layers_per_block": p["num_res_blocks"],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "attention_head_dim": heads,
        "cross_attention_dim": context[0] if isinstance(context, list) else context,
        "transformer_layers_per_block": p.get("transformer_depth", 1),
        "use_linear_projection": bool(p.get("use_linear_in_transformer", False)),
        "upcast_attention": upcasts_attention(original),
    }


def upcasts_attention(original: dict[str, Any]) -> bool:
    """Attention scores in float32 under half precision: for v models (SD 2.x 768-v overflows fp16 without,
    so diffusers ships SD 2.1 with it); a config's own `unet_config.params.upcast_attention` wins."""
    p = _params(original, "unet_config")
    v_model = _get(original, "model", "params", "parameterization") == "v"
    return bool(p.get("upcast_attention", v_model))


def vae_config(original: dict[str, Any]) -> dict[str, Any]:
    """AutoencoderKL config for the `first_stage_config` of an LDM config."""
    dd = _params(original, "first_stage_config")["ddconfig"]
    widths = [dd["ch"] * m for m in dd["ch_mult"]]
    latent_size = _get(original, "model", "params", "image_size") or 64
    return {
        "sample_size": latent_size * 2 ** (len(widths) - 1),
        "in_channels": dd["in_channels"],
        "out_channels": dd["out_ch"],
        "block_out_channels": widths,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "latent_channels": dd["z_channels"],
        "layers_per_block": dd["num_res_blocks"],
        "norm_num_groups": dd.get("norm_num_groups", 32),
        "scaling_factor": _get(original, "model", "params", "scale_factor") or 0.18215,
    }


def text_encoder_overrides(original: dict[str, Any]) -> dict[str, Any]:
    """The text-encoder settings the config gives (`num_attention_heads`, `version`), if any."""
    return dict(_params(original, "cond_stage_config"))


def uses_open_clip(original: dict[str, Any]) -> bool:
    """Whether the config's text encoder is OpenCLIP (SD 2.x's FrozenOpenCLIPEmbedder)."""
    return "OpenCLIP" in str(_get(original, "model", "params", "cond_stage_config", "target") or "")


def text_layer(original: dict[str, Any]) -> str:
    """The OpenCLIP layer the UNet reads (`cond_stage_config.params.layer`; LDM's default is `last`)."""
    return str(text_encoder_overrides(original).get("layer", "last"))


def default_tokenizer(original: dict[str, Any]) -> str:
    """The tokenizer source the config names (FrozenCLIPEmbedder's `version`), else CLIP ViT-L/14's.

    OpenCLIP's `version` names pretrained weights, not a tokenizer; its BPE is CLIP ViT-L/14's.
    """
    version = None if uses_open_clip(original) else text_encoder_overrides(original).get("version")
    return str(version or CLIP_L)


def noise_scheduler(original: dict[str, Any]) -> DDPMScheduler:
    """SD's training noise schedule, with the config's betas, step count and parameterization."""
    params = _get(original, "model", "params") or {}
    prediction = "v_prediction" if params.get("parameterization") == "v" else "epsilon"
    base = sd_noise_scheduler().config
    return DDPMScheduler.from_config(
        base,
        beta_start=params.get("linear_start", base.beta_start),
        beta_end=params.get("linear_end", base.beta_end),
        num_train_timesteps=params.get("timesteps", base.num_train_timesteps),
        prediction_type=prediction,
    )
