"""Test-side writer of SDXL single files in Stability's SGM layout, and of their sidecar SGM config.

The UNet and VAE take LDM's names (inference/models/ldm_export.py; SDXL's `add_embedding` is LDM's
`label_emb.0.0` / `label_emb.0.2`), CLIP-L goes under `conditioner.embedders.0.transformer.text_model.`,
and bigG under `conditioner.embedders.1.model.` in OpenCLIP's names, written here independently of the
loader: q, k, v stacked into `attn.in_proj_*`, the positional embedding bare, and `text_projection` stored
as OpenCLIP multiplies it, `pooled @ text_projection`, i.e. the transpose of the Linear weight.
"""

from __future__ import annotations

from typing import Any

import torch

from inference.models.bundle import ModelBundle
from inference.models.ldm_export import unet_names, vae_names
from tests.ldm_export import OPEN_CLIP_BLOCK

CLIP_L = "conditioner.embedders.0.transformer.text_model."
BIG_G = "conditioner.embedders.1.model."


def big_g_to_sgm(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`conditioner.embedders.1.model.*` tensors of a CLIPTextModelWithProjection."""
    state = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    out = {
        BIG_G + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        BIG_G + "positional_embedding": state["embeddings.position_embedding.weight"],
        BIG_G + "ln_final.weight": state["final_layer_norm.weight"],
        BIG_G + "ln_final.bias": state["final_layer_norm.bias"],
        BIG_G + "text_projection": state["text_projection.weight"].T,
        BIG_G + "logit_scale": torch.tensor(4.6052),
    }
    for i in range(encoder.config.num_hidden_layers):
        layer, block = f"encoder.layers.{i}.", f"{BIG_G}transformer.resblocks.{i}."
        for ours, theirs in OPEN_CLIP_BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{block}{theirs}.{kind}"] = state[f"{layer}{ours}.{kind}"]
        for kind in ("weight", "bias"):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat(
                [state[f"{layer}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            )
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


def _renamed(module: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """`module`'s tensors under their LDM `names`, on their own device (the meta device works too)."""
    out = {}
    for key, value in module.state_dict().items():
        if ".mid.attn_1." in names[key] and value.ndim == 2:  # the VAE's attention linears: 1x1 convs
            value = value[:, :, None, None]
        out[names[key]] = value.detach().clone().contiguous()
    return out


def sdxl_bundle_to_sgm(bundle: ModelBundle, markers: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """One SGM state dict of `bundle` (UNet, VAE, both text encoders), with empty `markers` (e.g. v_pred)."""
    clip_l = {key: CLIP_L + key.removeprefix("text_model.") for key in bundle.text_encoder.state_dict()}
    state = _renamed(bundle.unet, unet_names(bundle.unet)) | _renamed(bundle.vae, vae_names(bundle.vae))
    state |= _renamed(bundle.text_encoder, clip_l) | big_g_to_sgm(bundle.text_encoder_2)
    return state | {marker: torch.tensor([]) for marker in markers}


def sgm_config(bundle: ModelBundle, scaling: str = "EpsScaling") -> dict[str, Any]:
    """A sidecar SGM config (as sd_xl_base.yaml) with what `bundle`'s shapes do not show."""
    u, v = bundle.unet.config, bundle.vae.config
    head_channels = {w // h for w, h in zip(u.block_out_channels, u.attention_head_dim, strict=True)}
    assert len(head_channels) == 1, "SGM's UNet has one head width"
    embedders = [
        {"params": {"num_attention_heads": encoder.config.num_attention_heads}}
        for encoder in (bundle.text_encoder, bundle.text_encoder_2)
    ]
    return {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": {
        "scale_factor": v.scaling_factor,
        "denoiser_config": {"params": {"scaling_config": {
            "target": f"sgm.modules.diffusionmodules.denoiser_scaling.{scaling}"}}},
        "network_config": {"params": {
            "num_head_channels": head_channels.pop(), "norm_num_groups": u.norm_num_groups}},
        "conditioner_config": {"params": {"emb_models": embedders}},
        "first_stage_config": {"params": {"ddconfig": {"norm_num_groups": v.norm_num_groups}}},
    }}}  # fmt: skip
