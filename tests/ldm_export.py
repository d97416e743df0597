"""Write a diffusers-class model in the original LDM single-file layout, for loader round-trip tests.

The key mapping is written from the layout of the CompVis files: the UNet's input_blocks / middle_block /
output_blocks with resnets as in_layers / emb_layers / out_layers, the VAE's encoder.down / decoder.up
(numbered from the lowest resolution up) with mid.attn_1 q/k/v/proj_out as 1x1 convs, CLIP under
cond_stage_model.transformer.text_model.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from train.models.bundle import ModelBundle

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{RESNET[name]}.{tail}"


UNET_FIXED = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def _layer(kind: str, index: int, rest: str) -> str:
    """An LDM block holds a resnet at `.0` and, when it has one, a spatial transformer at `.1`."""
    return f"{index}.0.{_resnet(rest)}" if kind == "resnets" else f"{index}.1.{rest}"


def _unet_key(key: str, per: int, up_attention: list[bool]) -> str:
    """The LDM name of one diffusers UNet key; `per` is layers_per_block + 1 (the downsampler's slot)."""
    for old, ldm in UNET_FIXED.items():
        if key.startswith(old):
            return ldm + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        return "input_blocks." + _layer(m[2], 1 + int(m[1]) * per + int(m[3]), m[4])
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        if m[1] == "resnets":
            return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
        return f"middle_block.1.{m[3]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        return "output_blocks." + _layer(m[2], int(m[1]) * per + int(m[3]), m[4])
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])  # the upsampler follows the block's last resnet (and its transformer, if any)
        return f"output_blocks.{block * per + per - 1}.{2 if up_attention[block] else 1}.conv.{m[2]}"
    raise AssertionError(f"no LDM name for UNet key {key}")


def unet_to_ldm(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*` keys for a diffusers UNet2DConditionModel."""
    per = unet.config.layers_per_block + 1
    up_attention = ["CrossAttn" in t for t in unet.config.up_block_types]
    return {
        "model.diffusion_model." + _unet_key(key, per, up_attention): value.clone()
        for key, value in unet.state_dict().items()
    }


def vae_to_ldm(vae: torch.nn.Module, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    """LDM keys (under `prefix`) for a diffusers AutoencoderKL; attention linears become 1x1 convs."""
    last = len(vae.config.block_out_channels) - 1
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{last - int(m[1])}.block.", new
        )
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{last - int(m[1])}.upsample.",
            new,
        )
        if ".mid_block.attentions.0." in new:
            head, _, rest = new.partition("mid_block.attentions.0.")
            name, _, tail = rest.rpartition(".")
            new = f"{head}mid.attn_1.{VAE_ATTENTION[name]}.{tail}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[prefix + new] = value.clone()
    return out


def clip_to_ldm(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`cond_stage_model.transformer.text_model.*` keys for a transformers CLIPTextModel."""
    prefix = "cond_stage_model.transformer.text_model."
    return {prefix + k.removeprefix("text_model."): v.clone() for k, v in text_encoder.state_dict().items()}


def bundle_to_ldm(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """One LDM state dict holding the UNet, the VAE and the text encoder of `bundle`."""
    return unet_to_ldm(bundle.unet) | vae_to_ldm(bundle.vae) | clip_to_ldm(bundle.text_encoder)


def original_config(bundle: ModelBundle, parameterization: str | None = None) -> dict[str, Any]:
    """An LDM original config (the sidecar .yaml) describing the architecture of `bundle`."""
    u, v = bundle.unet.config, bundle.vae.config
    base, vbase = u.block_out_channels[0], v.block_out_channels[0]
    params: dict[str, Any] = {
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "timesteps": 1000,
        "image_size": u.sample_size,
        "scale_factor": v.scaling_factor,
        "unet_config": {"params": {
            "in_channels": u.in_channels, "out_channels": u.out_channels, "model_channels": base,
            "attention_resolutions": [2**i for i, t in enumerate(u.down_block_types) if "CrossAttn" in t],
            "num_res_blocks": u.layers_per_block, "channel_mult": [c // base for c in u.block_out_channels],
            "num_heads": u.attention_head_dim, "transformer_depth": 1, "context_dim": u.cross_attention_dim,
        }},
        "first_stage_config": {"params": {"ddconfig": {
            "z_channels": v.latent_channels, "in_channels": v.in_channels, "out_ch": v.out_channels,
            "ch": vbase, "ch_mult": [c // vbase for c in v.block_out_channels],
            "num_res_blocks": v.layers_per_block, "norm_num_groups": v.norm_num_groups,
        }}},
        "cond_stage_config": {
            "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
            "params": {"num_attention_heads": bundle.text_encoder.config.num_attention_heads},
        },
    }  # fmt: skip
    if parameterization:
        params["parameterization"] = parameterization
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


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
