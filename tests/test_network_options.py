"""kohya's network_dropout, rank_dropout and module_dropout: where they act and how much they drop; LoRA+;
block lr weights in a real run (their parsing and groups: test_block_lora.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from inference.models.loading import load_base_model
from inference.models.tiny import build_tiny
from train.config import ModelConfig, NetworkConfig
from train.errors import ConfigError
from train.network.dropouts import Dropouts, apply_dropouts
from train.network.lora import LoRANetwork
from train.network.registry import check_rank_fits

from .test_cli import QUICK, run_train


@pytest.fixture(scope="module")
def tiny():
    return load_base_model(ModelConfig(kind="tiny"))


def linear_layer(bundle, cfg: NetworkConfig):
    network = LoRANetwork(bundle, cfg)
    layer = next(a for a in network.unet_layers if isinstance(a.down, torch.nn.Linear))
    with torch.no_grad():
        layer.up.weight.normal_(generator=torch.Generator().manual_seed(0))  # up starts at zero
    return network, layer


def test_network_dropout_drops_the_down_projections_output_not_the_input(tiny):
    network, adapted = linear_layer(tiny, NetworkConfig(dim=4, alpha=4.0, dropout=0.5))
    peft_layer, down, up = adapted.layer, adapted.down, adapted.up
    x = torch.randn(2, 6, down.in_features)
    torch.manual_seed(5)
    out = peft_layer(x)
    torch.manual_seed(5)
    expected = peft_layer.base_layer(x) + up(F.dropout(F.linear(x, down.weight), p=0.5)) * 1.0
    assert torch.allclose(out, expected, atol=1e-6)
    torch.manual_seed(5)
    on_input = peft_layer.base_layer(x) + up(F.linear(F.dropout(x, p=0.5), down.weight))
    assert not torch.allclose(out, on_input, atol=1e-3)  # peft's placement would be another regulariser
    down.eval()
    plain = peft_layer.base_layer(x) + up(F.linear(x, down.weight))
    assert torch.allclose(peft_layer(x), plain, atol=1e-6)  # no dropout outside training
    network.remove()


def test_rank_dropout_drops_whole_rank_channels_per_sample_and_rescales():
    torch.manual_seed(0)
    lx = apply_dropouts(torch.ones(400, 3, 8), Dropouts(rank=0.25))
    assert torch.equal(lx[:, :1, :].expand_as(lx), lx)  # one mask per sample and channel, across tokens
    assert lx.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (lx[:, 0, :] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    conv = apply_dropouts(torch.ones(400, 8, 2, 2), Dropouts(rank=0.25))
    assert torch.equal(conv[:, :, :1, :1].expand_as(conv), conv)


def test_module_dropout_skips_a_layers_whole_lora_at_its_rate():
    torch.manual_seed(0)
    skipped = [
        apply_dropouts(torch.ones(2, 4), Dropouts(module=0.3)).abs().sum().item() == 0 for _ in range(2000)
    ]
    assert sum(skipped) / 2000 == pytest.approx(0.3, abs=0.03)
    assert apply_dropouts(torch.ones(2, 4), Dropouts()).sum().item() == 8


def test_dropouts_and_block_lr_weights_through_python_m_train(tmp_path):
    """One run for both: the dropouts are recorded; IN blocks at lr weight 0 keep their zero up-weights
    while the others learn, and each block's lr is logged under its own key."""
    options = ["network.dropout=0.1", "network.rank_dropout=0.1", "network.module_dropout=0.1"]
    blocks = ["network.down_lr_weight=zeros", "network.mid_lr_weight=0.5"]
    result = run_train(tmp_path / "run", *QUICK, "eval.enabled=false", *options, *blocks)
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "run" / "char_lora.safetensors"), framework="pt") as f:
        meta = f.metadata()
        ups = {key: f.get_tensor(key) for key in f.keys() if key.endswith("lora_up.weight")}
    assert meta["ss_network_dropout"] == "0.1"
    args = json.loads(meta["ss_network_args"])
    assert args["rank_dropout"] == "0.1" and args["module_dropout"] == "0.1"
    assert args["down_lr_weight"] == "zeros" and args["mid_lr_weight"] == "0.5"
    down = [up for key, up in ups.items() if "_down_blocks_" in key]
    others = [up for key, up in ups.items() if "_up_blocks_" in key or "_mid_block_" in key]
    assert down and not any(up.any() for up in down)
    assert others and all(up.any() for up in others)
    logged = set().union(*(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()))
    assert "lr/unet_block12" in logged and "lr/textencoder" in logged
    assert not any(key.startswith("lr/unet_block0") and int(key[-2:]) < 12 for key in logged)


def test_loraplus_trains_the_up_weights_at_ratio_times_the_rate(tiny):
    network = LoRANetwork(
        tiny, NetworkConfig(dim=4, alpha=4.0, loraplus_lr_ratio=16, loraplus_text_encoder_lr_ratio=4)
    )
    groups = {g["name"]: g for g in network.param_groups(1e-4, 5e-5)}
    assert {name: g["lr"] for name, g in groups.items()} == pytest.approx(
        {"te": 5e-5, "te_plus": 2e-4, "unet": 1e-4, "unet_plus": 1.6e-3}
    )
    ups = {id(p) for layer in network.unet_layers for p in layer.up.parameters()}
    assert {id(p) for p in groups["unet_plus"]["params"]} == ups
    assert not ups & {id(p) for p in groups["unet"]["params"]}
    network.remove()


def test_loraplus_through_python_m_train_logs_both_rates(tmp_path):
    result = run_train(tmp_path / "run", *QUICK, "eval.enabled=false", "network.loraplus_lr_ratio=16")
    assert result.returncode == 0, result.stderr[-3000:]
    record = next(
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open() if "lr/unet" in line
    )
    assert record["lr/unet_plus"] == pytest.approx(16 * record["lr/unet"])
    assert record["lr/textencoder_plus"] == pytest.approx(16 * record["lr/textencoder"])


def test_a_rank_above_every_layer_is_refused_and_lokr_keeps_its_full_matrix_reading():
    """dim=100000 built adapters until the run was killed for memory; LyCORIS reads a huge LoKr dim as
    "full matrix", so LoKr is left alone."""
    bundle = build_tiny(seed=0)
    check_rank_fits(bundle, NetworkConfig(dim=8))
    with pytest.raises(
        ConfigError, match=r"network.dim=100000 is more than the widest layer of tiny can use \(128"
    ):
        check_rank_fits(bundle, NetworkConfig(dim=100000))
    with pytest.raises(ConfigError, match="network.conv_dim=5000"):
        check_rank_fits(bundle, NetworkConfig(module="loha", conv_dim=5000))
    check_rank_fits(bundle, NetworkConfig(module="lokr", dim=100000))
