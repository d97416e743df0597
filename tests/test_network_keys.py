"""On SD 1.5's real architecture the LoRA file has exactly kohya's 192 UNet + 72 text-encoder modules."""

from __future__ import annotations

from safetensors import safe_open

from train.config import NetworkConfig, TrainConfig
from train.models.tiny import build_sd15_arch
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

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


def test_sd15_lora_keys_match_kohya(tmp_path):
    bundle = build_sd15_arch(seed=0)
    cfg = TrainConfig(network=NetworkConfig(dim=4, alpha=1.0))
    network = LoRANetwork(bundle, cfg.network)
    facts = {"steps": 0, "epoch": 0, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}
    path = save_lora(tmp_path / "keys.safetensors", network.state_dict(), lora_metadata(cfg, facts))

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
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_v2"] == "False"
    assert all(isinstance(v, str) for v in metadata.values())
