"""kohya's block-wise LoRA: block numbers, lr-weight presets, per-block ranks, and the groups they make."""

import math

import pytest

from tests.test_network_keys import sd15_skeleton
from train.config import NetworkConfig
from train.errors import ConfigError
from train.network.blocks import block_index, block_lr_weights, block_name
from train.network.lora import LoRANetwork


def test_block_numbers_follow_kohyas_in_mid_out_layout():
    cases = {
        "lora_unet_down_blocks_0_attentions_0_proj_in": "IN01",
        "lora_unet_down_blocks_0_resnets_1_conv1": "IN02",
        "lora_unet_down_blocks_0_downsamplers_0_conv": "IN03",
        "lora_unet_down_blocks_3_resnets_1_conv2": "IN11",
        "lora_unet_mid_block_attentions_0_proj_out": "MID",
        "lora_unet_up_blocks_0_resnets_0_conv1": "OUT00",
        "lora_unet_up_blocks_1_upsamplers_0_conv": "OUT05",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k": "OUT11",
    }
    assert {name: block_name(block_index(name)) for name in cases} == cases
    assert block_index("lora_te_text_model_encoder_layers_0_mlp_fc1") == -1


def test_lr_presets_and_threshold_give_kohyas_values():
    sine = block_lr_weights(NetworkConfig(down_lr_weight="sine"))
    assert sine[:12] == pytest.approx([math.sin(math.pi * i / 22) for i in range(12)])
    assert sine[12:] == [1.0] * 13  # MID and OUT untouched
    cosine = block_lr_weights(NetworkConfig(up_lr_weight="cosine+.5", mid_lr_weight=0.0))
    assert cosine[13] == pytest.approx(1.5) and cosine[24] == pytest.approx(0.5) and cosine[12] == 0.0
    short = block_lr_weights(NetworkConfig(down_lr_weight="0.5,0.5"))  # kohya fills the rest with 1
    assert short[:3] == [0.5, 0.5, 1.0]
    cut = block_lr_weights(NetworkConfig(down_lr_weight="linear", block_lr_zero_threshold=0.5))
    assert cut[:12] == pytest.approx([0.0] * 6 + [i / 11 for i in range(6, 12)])
    with pytest.raises(ConfigError, match="network.up_lr_weight has 13 values"):
        block_lr_weights(NetworkConfig(up_lr_weight=[1] * 13))
    with pytest.raises(ConfigError, match="not a list of numbers"):
        block_lr_weights(NetworkConfig(down_lr_weight="sin"))


def test_block_dims_set_each_blocks_rank_and_a_zero_block_gets_no_adapter():
    dims = [4] * 25
    dims[12] = 0  # MID
    dims[24] = 2  # OUT11
    alphas = [1.0] * 25
    cfg = NetworkConfig(dim=8, alpha=4.0, block_dims=dims, block_alphas=alphas, train_text_encoder=False)
    network = LoRANetwork(sd15_skeleton(), cfg)
    tensors = network.state_dict()
    names = {key.split(".")[0] for key in tensors}
    assert not any("mid_block" in name for name in names)
    to_k = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k"
    assert tuple(tensors[f"{to_k}.lora_down.weight"].shape) == (2, 768)
    assert tensors[f"{to_k}.alpha"].item() == 1.0
    proj_in = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert tensors[f"{proj_in}.lora_down.weight"].shape[0] == 4


def test_block_lr_weights_make_one_group_per_block_at_lr_times_weight():
    cfg = NetworkConfig(down_lr_weight="zeros", mid_lr_weight=0.5, train_text_encoder=False)
    network = LoRANetwork(sd15_skeleton(), cfg)
    groups = {group["name"]: group for group in network.param_groups(1e-4, 5e-5)}
    assert not any(name.startswith("unet_block0") and int(name[-2:]) < 12 for name in groups)  # IN at 0
    assert groups["unet_block12"]["lr"] == pytest.approx(5e-5)
    assert groups["unet_block16"]["lr"] == pytest.approx(1e-4)  # OUT03: up_blocks_1_attentions_0
    in_block = {id(p) for layer in network.unet_layers if "down_blocks" in layer.target.kohya_name
                for p in (*layer.down.parameters(), *layer.up.parameters())}  # fmt: skip
    trained = {id(p) for group in groups.values() for p in group["params"]}
    assert in_block and not in_block & trained
    assert json_args(network)["down_lr_weight"] == "zeros" and json_args(network)["mid_lr_weight"] == "0.5"


def json_args(network):
    return network.header()["ss_network_args"]


def test_block_options_that_do_not_parse_are_one_line_errors(compose_config):
    with pytest.raises(ConfigError, match="network.block_dims has 3 values: give 25"):
        compose_config("network.block_dims=[1,2,3]", "dataset.train_dir=x")
    cfg = compose_config(
        "network.down_lr_weight=sine+.5",
        "network.conv_block_dims='" + ",".join(["2"] * 25) + "'",
        "dataset.train_dir=x",
    )
    assert cfg.network.down_lr_weight == "sine+.5" and cfg.network.conv_block_dims == ",".join(["2"] * 25)
