"""An SDXL LoRA's header says what kohya writes for SDXL, and the text encoders train at kohya's rates: one
group for both, or with two rates in optimizer.text_encoder_lr one each (issue 19)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from diffusers import DDPMScheduler

from inference.models.tiny import build_tiny
from inference.models.tiny_sdxl import build_tiny_sdxl
from train.config import NetworkConfig, OptimizerConfig, TrainConfig
from train.config_checks import _check_learning_rates
from train.errors import ConfigError
from train.network.lokr import LokrNetwork
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, model_facts
from train.network.registry import build_network, optimizer_groups

RUN = {"steps": 2, "epoch": 1, "num_epochs": 1, "max_train_steps": 2, "num_batches_per_epoch": 2}


@pytest.fixture(scope="module")
def sdxl():
    return build_tiny_sdxl(seed=0)


def test_sdxl_header_is_kohyas(sdxl):
    cfg = TrainConfig()
    meta = lora_metadata(cfg, RUN | model_facts(sdxl))
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["ss_v_parameterization"]) == (
        "sdxl_base_v1-0", "False", "False",
    )  # fmt: skip
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.prediction_type"] == "epsilon"

    v_scheduler = DDPMScheduler.from_config(sdxl.noise_scheduler.config, prediction_type="v_prediction")
    meta = lora_metadata(cfg, RUN | model_facts(replace(sdxl, noise_scheduler=v_scheduler)))
    # kohya keeps the SDXL version string for a v-prediction model and says so in the other keys
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["ss_v_parameterization"]) == (
        "sdxl_base_v1-0", "False", "True",
    )  # fmt: skip
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.prediction_type"] == "v"

    two = replace(cfg, optimizer=OptimizerConfig(lr=1e-4, text_encoder_lr=[5e-5, 2e-5]))
    assert lora_metadata(two, RUN | model_facts(sdxl))["ss_text_encoder_lr"] == "[5e-05, 2e-05]"
    meta = lora_metadata(cfg, RUN | model_facts(build_tiny(seed=0)))
    assert (meta["ss_base_model_version"], meta["modelspec.implementation"]) == ("sd_v1", "diffusers")


def _groups(network: LoRANetwork, bundle, **optimizer) -> dict[str, tuple[float, set[str]]]:
    """group name → (lr, the file prefixes of its layers: lora_unet / lora_te1 / lora_te2)."""
    owner = {}
    for layer in network.layers:
        for param in (*layer.down.parameters(), *layer.up.parameters()):
            owner[id(param)] = "_".join(layer.target.kohya_name.split("_")[:2])
    groups = optimizer_groups(network, bundle, OptimizerConfig(lr=1e-4, **optimizer))
    return {g["name"]: (g["lr"], {owner[id(p)] for p in g["params"]}) for g in groups}


def test_one_text_encoder_rate_is_one_group_two_rates_are_one_group_each(sdxl):
    network = LoRANetwork(sdxl, NetworkConfig(dim=2))
    assert _groups(network, sdxl, text_encoder_lr=5e-5) == {
        "te": (5e-5, {"lora_te1", "lora_te2"}), "unet": (1e-4, {"lora_unet"}),
    }  # fmt: skip
    assert _groups(network, sdxl, text_encoder_lr=[5e-5, 2e-5]) == {
        "te1": (5e-5, {"lora_te1"}), "te2": (2e-5, {"lora_te2"}), "unet": (1e-4, {"lora_unet"}),
    }  # fmt: skip
    # a rate of 0 freezes that encoder alone (kohya leaves lr-0 groups out)
    assert set(_groups(network, sdxl, text_encoder_lr=[0.0, 2e-5])) == {"te2", "unet"}
    network.remove()

    lokr = LokrNetwork(sdxl, NetworkConfig(module="lokr", dim=2))
    groups = optimizer_groups(lokr, sdxl, OptimizerConfig(lr=1e-4, text_encoder_lr=[5e-5, 2e-5]))
    assert [(g["name"], g["lr"]) for g in groups] == [("te1", 5e-5), ("te2", 2e-5), ("unet", 1e-4)]
    sizes = {g["name"]: len(g["params"]) for g in groups}
    assert sizes["te1"] == sizes["te2"] > 0  # tiny SDXL's encoders have the same layers
    lokr.remove()


def test_text_encoder_lr_values_are_checked():
    sd15 = build_tiny(seed=0)
    network = LoRANetwork(sd15, NetworkConfig(dim=2))
    with pytest.raises(ConfigError, match=r"text_encoder_lr=\[5e-05, 2e-05\]: tiny has one text encoder"):
        optimizer_groups(network, sd15, OptimizerConfig(text_encoder_lr=[5e-5, 2e-5]))
    network.remove()
    for value in ([1, 2, 3], "fast"):
        typed = OptimizerConfig(text_encoder_lr=value)
        shown = re.escape(f"optimizer.text_encoder_lr={typed.text_encoder_lr!r} must be a number")
        with pytest.raises(ConfigError, match=shown):
            _check_learning_rates(typed, NetworkConfig())
    with pytest.raises(ConfigError, match=r"network.module=full trains at one text-encoder rate"):
        _check_learning_rates(OptimizerConfig(text_encoder_lr=[1e-5, 1e-5]), NetworkConfig(module="full"))
    with pytest.raises(ConfigError, match=r"optimizer.text_encoder_lr=\[1e-05, -1.0\] must be >= 0"):
        _check_learning_rates(OptimizerConfig(text_encoder_lr=[1e-5, -1]), NetworkConfig())
    # the UNet frozen, the second encoder training: a valid run
    _check_learning_rates(OptimizerConfig(unet_lr=0, text_encoder_lr=["0", "1e-5"]), NetworkConfig())


def test_networks_without_sdxl_support_and_sd1_block_options_are_refused_on_sdxl(sdxl):
    with pytest.raises(ConfigError, match="network.module=full does not train SDXL models"):
        build_network(sdxl, NetworkConfig(module="full"))
    with pytest.raises(ConfigError, match="network.block_dims: the block-wise options count SD 1.x's 25"):
        build_network(sdxl, NetworkConfig(block_dims=[4] * 25))


def test_the_command_line_takes_two_text_encoder_rates(tmp_path):
    from tests.test_config import _typed

    opt = _typed(tmp_path, "optimizer.text_encoder_lr=[5e-5,2e-5]").optimizer
    assert (opt.text_encoder_lrs, opt.part_lrs, opt.text_encoder_2_lr) == ((5e-5, 2e-5), (1e-4, 5e-5), 2e-5)
    with pytest.raises(ConfigError, match="network.module=embedding trains at one text-encoder rate"):
        _typed(tmp_path, "network=embedding", "optimizer.text_encoder_lr=[5e-3,5e-3]")
