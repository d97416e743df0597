"""On SD 1.5's real architecture the LoRA file has exactly kohya's modules: 192 UNet + 72 text-encoder ones,
and with conv_dim (LoCon) 86 more in the resnets and resamplers, 278 UNet modules in all."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from inference.models.bundle import ModelBundle
from inference.models.tiny import build_sd15_arch
from train.config import NetworkConfig, TrainConfig
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

FACTS = {"steps": 0, "epoch": 0, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}

# SD 1.5: three cross-attention down blocks with two transformers each, a mid-block transformer, and
# three cross-attention up blocks (1..3) with three each: 16 transformers x 12 layers = 192.
TRANSFORMER_LAYERS = [
    "proj_in",
    "proj_out",
    *[
        f"transformer_blocks_0_{attn}_{proj}"
        for attn in ("attn1", "attn2")
        for proj in ("to_q", "to_k", "to_v", "to_out_0")
    ],
    "transformer_blocks_0_ff_net_0_proj",
    "transformer_blocks_0_ff_net_2",
]
# SD 1.5's UNet as published: block widths, resnets per down block (up blocks have one more), and the
# width of the time embedding every resnet's time_emb_proj reads (4 x the first block).
CHANNELS = (320, 640, 1280, 1280)
LAYERS_PER_BLOCK = 2
TIME_EMBED = 4 * CHANNELS[0]


def sd15_skeleton() -> ModelBundle:
    """SD 1.5 with uninitialised weights: real module names and shapes, without 20 s of random init."""
    with torch.device("meta"):
        bundle = build_sd15_arch(seed=0)
    bundle.unet.to_empty(device="cpu")
    bundle.text_encoder.to_empty(device="cpu")
    return bundle


def expected_unet_names() -> set[str]:
    blocks = [f"down_blocks_{b}_attentions_{a}" for b in range(3) for a in range(2)]
    blocks += ["mid_block_attentions_0"]
    blocks += [f"up_blocks_{b}_attentions_{a}" for b in (1, 2, 3) for a in range(3)]
    return {f"lora_unet_{block}_{layer}" for block in blocks for layer in TRANSFORMER_LAYERS}


def expected_text_encoder_names() -> set[str]:
    layers = [
        "self_attn_q_proj",
        "self_attn_k_proj",
        "self_attn_v_proj",
        "self_attn_out_proj",
        "mlp_fc1",
        "mlp_fc2",
    ]
    return {f"lora_te_text_model_encoder_layers_{i}_{layer}" for i in range(12) for layer in layers}


def resnet_channels() -> dict[str, tuple[int, int]]:
    """(in, out) channels of every SD 1.5 resnet, worked out from the block widths and the skip connections.

    On the way down each resnet and each downsampler leaves a skip (after conv_in's first one); on the way
    up each resnet takes the previous output concatenated with the most recent skip.
    """
    channels: dict[str, tuple[int, int]] = {}
    skips = [CHANNELS[0]]  # conv_in
    for b, out in enumerate(CHANNELS):
        for i in range(LAYERS_PER_BLOCK):
            channels[f"down_blocks_{b}_resnets_{i}"] = (out if i else CHANNELS[max(b - 1, 0)], out)
            skips.append(out)
        if b < len(CHANNELS) - 1:
            skips.append(out)  # the downsampler's output
    for i in range(2):
        channels[f"mid_block_resnets_{i}"] = (CHANNELS[-1], CHANNELS[-1])
    previous = CHANNELS[-1]
    for b, out in enumerate(reversed(CHANNELS)):
        for i in range(LAYERS_PER_BLOCK + 1):
            channels[f"up_blocks_{b}_resnets_{i}"] = (previous + skips.pop(), out)
            previous = out
    assert not skips
    return channels


def expected_conv_modules(dim: int, conv_dim: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """kohya name → (down shape, up shape) of the 86 LoCon additions on SD 1.5."""
    shapes = {}
    for resnet, (c_in, c_out) in resnet_channels().items():
        name = f"lora_unet_{resnet}"
        shapes[f"{name}_conv1"] = ((conv_dim, c_in, 3, 3), (c_out, conv_dim, 1, 1))
        shapes[f"{name}_conv2"] = ((conv_dim, c_out, 3, 3), (c_out, conv_dim, 1, 1))
        shapes[f"{name}_time_emb_proj"] = ((dim, TIME_EMBED), (c_out, dim))
        if c_in != c_out:
            shapes[f"{name}_conv_shortcut"] = ((dim, c_in, 1, 1), (c_out, dim, 1, 1))
    # Every block but the last one down and the last one up changes resolution, at that block's width.
    resamplers = {f"down_blocks_{b}_downsamplers_0": width for b, width in enumerate(CHANNELS[:-1])}
    resamplers |= {f"up_blocks_{b}_upsamplers_0": width for b, width in enumerate(CHANNELS[::-1][:-1])}
    for block, width in resamplers.items():
        shapes[f"lora_unet_{block}_conv"] = ((conv_dim, width, 3, 3), (width, conv_dim, 1, 1))
    return shapes


def test_sd15_lora_keys_match_kohya(tmp_path):
    cfg = TrainConfig(network=NetworkConfig(dim=4, alpha=1.0))
    network = LoRANetwork(sd15_skeleton(), cfg.network)
    path = save_lora(
        tmp_path / "keys.safetensors",
        network.state_dict(),
        lora_metadata(cfg, FACTS | {"network": network.header()}),
    )

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata()
        proj_in = f.get_tensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight")
        to_k = f.get_tensor(
            "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k.lora_down.weight"
        )
        fc1_up = f.get_tensor("lora_te_text_model_encoder_layers_11_mlp_fc1.lora_up.weight")
    names = {key.split(".")[0] for key in keys}
    assert len(expected_unet_names()) == 192 and len(expected_text_encoder_names()) == 72
    assert names == expected_unet_names() | expected_text_encoder_names()
    for name in names:
        assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    assert len(keys) == 3 * 264
    assert tuple(proj_in.shape) == (4, 320, 1, 1)  # SD 1.5's proj_in is a 1x1 convolution
    assert tuple(to_k.shape) == (4, 768)  # cross-attention keys read the 768-wide text states
    assert tuple(fc1_up.shape) == (3072, 4) and not fc1_up.any()  # up-weights start at zero
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "1.0"
    assert metadata["ss_network_args"] == "{}"
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_v2"] == "False"
    assert all(isinstance(v, str) for v in metadata.values())


def test_sd15_locon_adds_kohyas_86_resnet_and_resampler_modules(tmp_path):
    cfg = TrainConfig(network=NetworkConfig(dim=8, alpha=4.0, conv_dim=4))  # conv_alpha left to kohya's 1.0
    network = LoRANetwork(sd15_skeleton(), cfg.network)
    path = save_lora(
        tmp_path / "locon.safetensors",
        network.state_dict(),
        lora_metadata(cfg, FACTS | {"network": network.header()}),
    )

    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = f.metadata()
    conv = expected_conv_modules(dim=8, conv_dim=4)
    assert len(conv) == 86
    unet_names = {key.split(".")[0] for key in tensors if key.startswith("lora_unet_")}
    assert len(unet_names) == 278
    assert unet_names == expected_unet_names() | set(conv)
    assert len(tensors) == 3 * (278 + 72)
    for name, (down, up) in conv.items():
        assert tuple(tensors[f"{name}.lora_down.weight"].shape) == down, name
        assert tuple(tensors[f"{name}.lora_up.weight"].shape) == up, name
        spatial = down[2:] == (3, 3)
        assert tensors[f"{name}.alpha"].item() == (1.0 if spatial else 4.0), name
    assert all(tensors[f"{name}.alpha"].item() == 4.0 for name in expected_unet_names())
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    assert metadata["ss_network_dim"] == "8" and metadata["ss_network_alpha"] == "4.0"


def test_locon_3x3_down_keeps_the_base_stride_and_padding():
    network = LoRANetwork(sd15_skeleton(), NetworkConfig(conv_dim=4, train_text_encoder=False))
    spatial = [layer for layer in network.unet_layers if layer.target.spatial]
    assert len(spatial) == 22 * 2 + 6  # conv1 and conv2 of 22 resnets, 3 downsamplers, 3 upsamplers
    for adapted in spatial:
        base = adapted.layer.get_base_layer()
        assert adapted.down.kernel_size == base.kernel_size == (3, 3)
        assert (adapted.down.stride, adapted.down.padding) == (base.stride, base.padding)
        assert adapted.up.kernel_size == (1, 1) and adapted.up.stride == (1, 1)
    strides = {adapted.target.path: adapted.down.stride for adapted in spatial}
    assert strides["down_blocks.0.downsamplers.0.conv"] == (2, 2)
