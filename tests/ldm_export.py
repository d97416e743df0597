"""Test-side writers of SD 2.x single files: the text encoder in OpenCLIP's layout and a v2-inference.yaml.

The SD 1.x parts come from inference/models/ldm_export.py (what a full fine-tune saves); our loader's OpenCLIP
reader (inference/models/open_clip_keys.py) is checked against this independent writer.
"""

from __future__ import annotations

from typing import Any

import torch

from inference.models.bundle import ModelBundle
from inference.models.ldm_export import original_config, unet_to_ldm, vae_to_ldm

# A CLIPEncoderLayer part → its name in an OpenCLIP ResidualAttentionBlock (open_clip's transformer.py).
OPEN_CLIP_BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_to_ldm(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`cond_stage_model.model.*` keys (SD 2.x's FrozenOpenCLIPEmbedder) for a transformers CLIPTextModel:
    q, k, v stacked into one in_proj, plus the contrastive head (text_projection, logit_scale) SD ignores."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    width = text_encoder.config.hidden_size
    prefix = "cond_stage_model.model."
    out = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
        prefix + "text_projection": torch.randn(width, width, generator=torch.Generator().manual_seed(0)),
        prefix + "logit_scale": torch.tensor(4.6052),
    }
    for i in range(text_encoder.config.num_hidden_layers):
        layer, block = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for ours, theirs in OPEN_CLIP_BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{block}{theirs}.{kind}"] = state[f"{layer}{ours}.{kind}"]
        for kind in ("weight", "bias"):
            stacked = [state[f"{layer}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{block}attn.in_proj_{kind}"] = torch.cat(stacked)
    return {key: value.clone() for key, value in out.items()}


def sd2_bundle_to_ldm(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """An SD 2.x-layout LDM state dict: `bundle`'s UNet and VAE, its text encoder in OpenCLIP's layout."""
    return unet_to_ldm(bundle.unet) | vae_to_ldm(bundle.vae) | open_clip_to_ldm(bundle.text_encoder)


def sd2_original_config(
    bundle: ModelBundle, head_channels: int, parameterization: str | None = None, layer: str = "penultimate"
) -> dict[str, Any]:
    """v2-inference(-v).yaml for `bundle`'s sizes: heads of `head_channels`, linear projections, OpenCLIP."""
    config = original_config(bundle, parameterization)
    params = config["model"]["params"]
    unet = params["unet_config"]["params"]
    del unet["num_heads"]
    unet.update(num_head_channels=head_channels, use_linear_in_transformer=True)
    heads = bundle.text_encoder.config.num_attention_heads
    params["cond_stage_config"] = {
        "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
        "params": {"freeze": True, "layer": layer, "num_attention_heads": heads},
    }
    return config
