"""A diffusers-class SD 1.x model in the original LDM single-file layout, as A1111 and ComfyUI load it.

The inverse of inference/models/ldm_keys.py (what our loader reads), written from the layout of the CompVis files: the UNet's input_blocks / middle_block /
output_blocks with resnets as in_layers / emb_layers / out_layers, the VAE's encoder.down / decoder.up
(numbered from the lowest resolution up) with mid.attn_1 q/k/v/proj_out as 1x1 convs, CLIP under
cond_stage_model.transformer.text_model.
A full fine-tune saves through `ldm_state_dict`; `original_config` is the sidecar `.yaml` that a model of
another architecture than SD 1.5 (the toy model) needs beside its file.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from inference.models import ldm_config
from inference.models.bundle import ModelBundle

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
    "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size/crop + pooled-text embedding
    "add_embedding.linear_2.": "label_emb.0.2.",
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


def _copy(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A CPU copy of `value` (float tensors in `dtype` when given), contiguous as safetensors wants it."""
    if dtype is None or not value.is_floating_point():
        dtype = value.dtype
    return value.detach().to("cpu", dtype, copy=True).contiguous()


def unet_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers UNet2DConditionModel key → its `model.diffusion_model.*` name."""
    per = unet.config.layers_per_block + 1
    up_attention = ["CrossAttn" in t for t in unet.config.up_block_types]
    return {key: "model.diffusion_model." + _unet_key(key, per, up_attention) for key in unet.state_dict()}


def _vae_key(key: str, last: int) -> str:
    new = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut", "nin_shortcut")
    new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
    new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
    new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
    # the decoder's blocks are numbered from the lowest resolution up in LDM, from the top in diffusers
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
    return new


def vae_names(vae: torch.nn.Module, prefix: str = "first_stage_model.") -> dict[str, str]:
    """diffusers AutoencoderKL key → its LDM name under `prefix`."""
    last = len(vae.config.block_out_channels) - 1
    return {key: prefix + _vae_key(key, last) for key in vae.state_dict()}


def clip_names(text_encoder: torch.nn.Module) -> dict[str, str]:
    """CLIPTextModel key (nested under `text_model.` or not) → `cond_stage_model.transformer.text_model.*`."""
    prefix = "cond_stage_model.transformer.text_model."
    return {key: prefix + key.removeprefix("text_model.") for key in text_encoder.state_dict()}


def _renamed(
    model: torch.nn.Module, names: dict[str, str], dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        name = names[key]
        if ".mid.attn_1." in name and value.ndim == 2:  # the VAE's attention linears are LDM's 1x1 convs
            value = value[:, :, None, None]
        out[name] = _copy(value, dtype)
    return out


def unet_to_ldm(unet: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*` tensors of a diffusers UNet2DConditionModel."""
    return _renamed(unet, unet_names(unet), dtype)


def vae_to_ldm(
    vae: torch.nn.Module, prefix: str = "first_stage_model.", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """LDM tensors (under `prefix`) of a diffusers AutoencoderKL; attention linears become 1x1 convs."""
    return _renamed(vae, vae_names(vae, prefix), dtype)


def clip_to_ldm(text_encoder: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """`cond_stage_model.transformer.text_model.*` tensors of a transformers CLIPTextModel."""
    return _renamed(text_encoder, clip_names(text_encoder), dtype)


def ldm_names(bundle: ModelBundle) -> dict[str, str]:
    """Every LDM key of `bundle`'s single file, by `unet.` / `vae.` / `text_encoder.` + diffusers key."""
    parts = {"unet": unet_names(bundle.unet), "vae": vae_names(bundle.vae)}
    parts["text_encoder"] = clip_names(bundle.text_encoder)
    return {f"{part}.{key}": name for part, names in parts.items() for key, name in names.items()}


def bundle_to_ldm(bundle: ModelBundle, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """One LDM state dict holding the UNet, the VAE and the text encoder of `bundle` (float ones in `dtype`)."""
    parts = unet_to_ldm(bundle.unet, dtype) | vae_to_ldm(bundle.vae, dtype=dtype)
    return parts | clip_to_ldm(bundle.text_encoder, dtype)


def original_config(bundle: ModelBundle, parameterization: str | None = None) -> dict[str, Any]:
    """An LDM original config (the sidecar .yaml) describing the architecture of `bundle`."""
    u, v, schedule = bundle.unet.config, bundle.vae.config, bundle.noise_scheduler.config
    base, vbase = u.block_out_channels[0], v.block_out_channels[0]
    params: dict[str, Any] = {
        "linear_start": schedule.beta_start,
        "linear_end": schedule.beta_end,
        "timesteps": schedule.num_train_timesteps,
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
            "num_res_blocks": v.layers_per_block,
        }}},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
    }  # fmt: skip
    # LoraSmith's own keys (ldm_config.py), written only where LDM's hard-coded values would be wrong:
    # LDM itself passes every key to its classes, which refuse the ones they do not know.
    if v.norm_num_groups != 32:
        params["first_stage_config"]["params"]["ddconfig"]["norm_num_groups"] = v.norm_num_groups
    te = bundle.text_encoder.config
    if te.num_attention_heads != max(te.hidden_size // 64, 1):
        params["cond_stage_config"]["params"] = {"num_attention_heads": te.num_attention_heads}
    if parameterization:
        params["parameterization"] = parameterization
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


def needs_sidecar(bundle: ModelBundle, parameterization: str | None = None) -> bool:
    """Whether a loader needs `original_config(bundle)` beside the file: any architecture but SD 1.5's
    (which loaders assume for a file without one), or a v-predicting model."""
    ours, sd15 = original_config(bundle, parameterization), ldm_config.default_original_config()
    return (
        parameterization is not None
        or ldm_config.unet_config(ours) != ldm_config.unet_config(sd15)
        or ldm_config.vae_config(ours) != ldm_config.vae_config(sd15)
        or bool(ldm_config.text_encoder_overrides(ours))
    )
