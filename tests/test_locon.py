"""`network=locon` composes, validates, and trains end to end through `python -m train` on the tiny model."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from inference.lora import load_lora_file
from tests.test_cli import run_train
from train.errors import ConfigError

# Two optimizer steps on the tiny model, one eval prompt at two weights: seconds, not minutes.
QUICK = [
    "model=tiny",
    "dataset=toy_character",
    "network=locon",
    "logger=none",
    "name=locon",
    "dataset.toy_images=2",
    "dataset.toy_repeats=1",
    "dataset.toy_reg_images=0",
    "training.max_train_epochs=null",
    "training.max_train_steps=2",
    "training.batch_size=1",
    "eval.prompts=[sls star]",
    "eval.weights=[0.0,1.0]",
    "eval.steps=2",
]


def test_locon_preset_is_lora_with_conv_layers(compose_config):
    cfg = compose_config("network=locon", "dataset.train_dir=x")
    net = cfg.network
    assert (net.module, net.dim, net.alpha, net.conv_dim, net.conv_alpha) == ("lora", 8, 4.0, 4, 1.0)
    assert compose_config("dataset.train_dir=x").network.conv_dim == 0  # plain LoRA stays the default


def test_conv_alpha_defaults_to_kohyas_one(compose_config):
    net = compose_config("network=locon", "network.conv_alpha=null", "dataset.train_dir=x").network
    assert net.conv_alpha is None and net.resolved_conv_alpha == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["network=locon", "network.conv_dim=-1"], "network.conv_dim=-1 must be >= 0"),
        (["network=locon", "network.conv_alpha=0"], "network.conv_alpha=0.0 must be a positive number"),
        (["network=locon", "network.conv_dim=0"], "conv_alpha=1.0 has no effect while network.conv_dim=0"),
        (["network.module=locon"], r"network.module='locon' is not valid; choose one of: lora"),
    ],
)
def test_bad_conv_settings_name_the_key_and_the_fix(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", *overrides)


def test_train_cli_with_network_locon_writes_conv_layers(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]

    path = run_dir / "locon.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        conv1_down = f.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight")
        conv1_up = f.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight")
        conv1_alpha = f.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.alpha")
        keys = set(f.keys())
    assert tuple(conv1_down.shape) == (4, 32, 3, 3) and tuple(conv1_up.shape) == (32, 4, 1, 1)
    assert conv1_up.any()  # trained: the up-weights left zero
    assert conv1_alpha.item() == 1.0
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight" in keys
    assert "lora_unet_down_blocks_1_resnets_0_time_emb_proj.alpha" in keys
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    assert len(load_lora_file(path).modules) == len({key.split(".")[0] for key in keys})
    assert (run_dir / "eval" / "grid.png").is_file()  # the eval grid patched the LoCon file in
