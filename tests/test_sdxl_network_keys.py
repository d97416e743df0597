"""SDXL LoRA files have exactly kohya's module names (issue 19).

kohya trains SDXL on its own UNet in the original SGM layout (sd-scripts library/sdxl_original_unet.py), so the
expected names are worked out here from the UNet's config the way that layout is built: input_blocks (conv_in
first, then each layer's resnet at .0 and transformer at .1, a downsampler `op` closing each level but the last),
middle_block (resnet, transformer, resnet) and output_blocks (one layer more per level, the upsampler after the
last one's resnet and transformer). On SDXL base that gives kohya's logged counts: 722 UNet modules, 72 + 192
text-encoder ones.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from inference.models.bundle import ModelBundle
from inference.models.tiny_sdxl import build_tiny_sdxl
from train.config import NetworkConfig
from train.network.dora import DoRANetwork
from train.network.loha import LohaNetwork
from train.network.lora import LoRANetwork
from train.network.targets import encoder_targets, unet_targets

ATTENTION = [f"{attn}_{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out_0")]
CLIP_LAYER = [
    "self_attn_q_proj",
    "self_attn_k_proj",
    "self_attn_v_proj",
    "self_attn_out_proj",
    "mlp_fc1",
    "mlp_fc2",
]


def _transformer(prefix: str, depth: int) -> dict[str, bool]:
    names = [f"{prefix}_proj_in", f"{prefix}_proj_out"]
    for k in range(depth):
        names += [
            f"{prefix}_transformer_blocks_{k}_{layer}" for layer in (*ATTENTION, "ff_net_0_proj", "ff_net_2")
        ]
    return dict.fromkeys(names, False)


def _resnet(prefix: str, c_in: int, c_out: int) -> dict[str, bool]:
    """kohya's SDXL resnet: 3x3 in_layers.2 / out_layers.3, Linear emb_layers.1, 1x1 skip_connection."""
    names = {f"{prefix}_in_layers_2": True, f"{prefix}_emb_layers_1": False, f"{prefix}_out_layers_3": True}
    if c_in != c_out:
        names[f"{prefix}_skip_connection"] = False
    return names


def kohya_sdxl_unet_names(config) -> dict[str, bool]:
    """Every kohya SDXL UNet LoRA name (without `lora_unet_`) → whether it is a 3x3 conv (LoCon only)."""
    widths, per = list(config.block_out_channels), config.layers_per_block
    attention = ["CrossAttn" in kind for kind in config.down_block_types]
    depths = config.transformer_layers_per_block
    depths = list(depths) if isinstance(depths, (list, tuple)) else [depths] * len(widths)
    names: dict[str, bool] = {}
    skips, previous, index = [widths[0]], widths[0], 1
    for level, width in enumerate(widths):
        for _ in range(per):
            names |= _resnet(f"input_blocks_{index}_0", previous, width)
            if attention[level]:
                names |= _transformer(f"input_blocks_{index}_1", depths[level])
            skips.append(width)
            previous, index = width, index + 1
        if level < len(widths) - 1:
            names[f"input_blocks_{index}_0_op"] = True
            skips.append(width)
            index += 1
    names |= _resnet("middle_block_0", previous, previous)
    names |= _transformer("middle_block_1", depths[-1])
    names |= _resnet("middle_block_2", previous, previous)
    index = 0
    for level in reversed(range(len(widths))):
        for i in range(per + 1):
            names |= _resnet(f"output_blocks_{index}_0", previous + skips.pop(), widths[level])
            if attention[level]:
                names |= _transformer(f"output_blocks_{index}_1", depths[level])
            if i == per and level > 0:
                names[f"output_blocks_{index}_{2 if attention[level] else 1}_conv"] = True
            previous, index = widths[level], index + 1
    assert not skips
    return names


def expected_names(
    bundle: ModelBundle, unet: bool = True, encoders: bool = True, conv: bool = False
) -> set[str]:
    names = set()
    if unet:
        layout = kohya_sdxl_unet_names(bundle.unet.config)
        blocks = ("_proj_", "_transformer_blocks_") if not conv else ("",)
        names |= {f"lora_unet_{name}" for name in layout if any(b in name for b in blocks)}
    if encoders:
        for prefix, encoder in (("lora_te1", bundle.text_encoder), ("lora_te2", bundle.text_encoder_2)):
            layers = range(encoder.config.num_hidden_layers)
            names |= {
                f"{prefix}_text_model_encoder_layers_{i}_{layer}" for i in layers for layer in CLIP_LAYER
            }
    return names


def sdxl_base_skeleton() -> ModelBundle:
    """SDXL base's published architecture on the meta device: real module names and shapes, no weights."""
    clip = dict(vocab_size=49408, max_position_embeddings=77)
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )  # fmt: skip
        first = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                             num_attention_heads=12, **clip))  # fmt: skip
        second = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, hidden_act="gelu", **clip,
        ))  # fmt: skip
    return ModelBundle(unet, None, first, None, None, "sdxl_base_skeleton", "sdxl_base_v1-0", second, None)


def _names(tensors: dict) -> set[str]:
    return {key.split(".")[0] for key in tensors}


def sdxl_arch_skeleton() -> ModelBundle:
    """`model=sdxl_arch` on the meta device, where inference.models has that builder."""
    builder = pytest.importorskip("inference.models.sdxl_arch", reason="no model=sdxl_arch builder here")
    return builder.build_sdxl_arch(meta=True)


@pytest.mark.parametrize("skeleton", [sdxl_base_skeleton, sdxl_arch_skeleton], ids=["sdxl_base", "sdxl_arch"])
def test_sdxl_base_targets_are_kohyas_722_unet_and_264_text_encoder_modules(skeleton):
    bundle = skeleton()
    unet = {t.kohya_name for t in unet_targets(bundle.unet, sdxl=True)}
    encoders = {t.kohya_name for _, targets in encoder_targets(bundle) for t in targets}
    assert len(unet) == 722 and len(encoders) == 72 + 192
    assert unet | encoders == expected_names(bundle)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in unet
    assert "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2" in unet
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in encoders
    conv = {t.kohya_name: t.spatial for t in unet_targets(bundle.unet, conv=True, sdxl=True)}
    assert conv == {
        f"lora_unet_{name}": spatial for name, spatial in kohya_sdxl_unet_names(bundle.unet.config).items()
    }
    assert "lora_unet_input_blocks_3_0_op" in conv and "lora_unet_output_blocks_2_2_conv" in conv


def test_tiny_sdxl_lora_file_has_kohyas_names_unet_only_and_with_both_encoders():
    bundle = build_tiny_sdxl(seed=0)
    unet_only = LoRANetwork(
        bundle, NetworkConfig(dim=4, train_text_encoder=False)
    )  # --network_train_unet_only
    tensors = unet_only.state_dict()
    assert _names(tensors) == expected_names(bundle, encoders=False)
    assert len(tensors) == 3 * len(_names(tensors)) and not unet_only.trains_text_encoder
    unet_only.remove()

    both = LoRANetwork(bundle, NetworkConfig(dim=4, conv_dim=2))
    tensors = both.state_dict()
    assert _names(tensors) == expected_names(bundle, conv=True)
    assert tuple(tensors["lora_unet_input_blocks_3_0_op.lora_down.weight"].shape) == (2, 32, 3, 3)
    assert tuple(tensors["lora_unet_output_blocks_0_0_skip_connection.lora_down.weight"].shape) == (
        4,
        128,
        1,
        1,
    )
    both.remove()


@pytest.mark.parametrize("network_class", [LohaNetwork, DoRANetwork], ids=["loha", "dora"])
def test_lycoris_and_dora_use_the_same_sdxl_names(network_class):
    bundle = build_tiny_sdxl(seed=0)
    network = network_class(bundle, NetworkConfig(module="loha", dim=2))
    assert _names(network.state_dict()) == expected_names(bundle)
    network.remove()
