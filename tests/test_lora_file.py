"""LoRA files are written atomically and canonically, with a header that describes the real base model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel

from inference.models.tiny import build_tiny
from train.config import TrainConfig
from train.network.lora_file import lora_metadata, model_facts, save_lora


def _tensors():
    return {"lora_unet_x.lora_down.weight": torch.ones(2, 3), "lora_unet_x.alpha": torch.tensor(1.0)}


def test_metadata_order_does_not_change_the_bytes(tmp_path):
    forward = {f"ss_key_{i}": str(i) for i in range(40)}
    backward = dict(reversed(list(forward.items())))
    a = save_lora(tmp_path / "a.safetensors", _tensors(), forward).read_bytes()
    b = save_lora(tmp_path / "b.safetensors", _tensors(), backward).read_bytes()
    assert a == b
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert f.metadata() == forward
        assert torch.equal(f.get_tensor("lora_unet_x.lora_down.weight"), torch.ones(2, 3))


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"previous good file")

    def interrupted(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("data.atomic.os.replace", interrupted)
    with pytest.raises(OSError):
        save_lora(target, _tensors(), {})
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def _facts(bundle) -> dict:
    """What train/run.py's Trainer._facts passes, with the base model's part from model_facts."""
    run = {"steps": 2, "epoch": 1, "num_epochs": 1, "max_train_steps": 2, "num_batches_per_epoch": 2}
    return run | model_facts(bundle)


def test_header_takes_v_prediction_from_the_loaded_model():
    tiny = build_tiny(seed=0)
    meta = lora_metadata(TrainConfig(), _facts(tiny))
    assert (meta["ss_v2"], meta["ss_v_parameterization"], meta["ss_base_model_version"]) == (
        "False",
        "False",
        "sd_v1",
    )
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"

    v_scheduler = DDPMScheduler.from_config(tiny.noise_scheduler.config, prediction_type="v_prediction")
    meta = lora_metadata(TrainConfig(), _facts(replace(tiny, noise_scheduler=v_scheduler)))
    assert (meta["ss_v2"], meta["ss_v_parameterization"], meta["ss_base_model_version"]) == (
        "False",
        "True",
        "sd_v1_v",
    )
    assert meta["modelspec.prediction_type"] == "v"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_header_tells_sd2_by_its_1024_wide_text_encoder():
    tiny = build_tiny(seed=0)
    # SD 2.x's OpenCLIP ViT-H width, at toy depth and vocabulary so that the test stays small.
    config = CLIPTextConfig(
        vocab_size=64, hidden_size=1024, intermediate_size=64, num_hidden_layers=1, num_attention_heads=8
    )
    sd2 = replace(tiny, text_encoder=CLIPTextModel(config))
    meta = lora_metadata(TrainConfig(), _facts(sd2))
    assert (meta["ss_v2"], meta["ss_base_model_version"]) == ("True", "sd_v2")
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-512/lora"
    v_scheduler = DDPMScheduler.from_config(tiny.noise_scheduler.config, prediction_type="v_prediction")
    meta = lora_metadata(TrainConfig(), _facts(replace(sd2, noise_scheduler=v_scheduler)))
    assert (meta["ss_v2"], meta["ss_v_parameterization"], meta["ss_base_model_version"]) == (
        "True",
        "True",
        "sd_v2_v",
    )
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert meta["modelspec.prediction_type"] == "v"
    # A loader that already knows the family (base_model_version) is believed as well.
    assert lora_metadata(TrainConfig(), _facts(replace(tiny, base_model_version="sd_v2")))["ss_v2"] == "True"


def test_header_without_model_facts_stays_sd1_epsilon():
    facts = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}
    meta = lora_metadata(TrainConfig(), facts)
    assert (meta["ss_v2"], meta["ss_base_model_version"], meta["modelspec.prediction_type"]) == (
        "False",
        "sd_v1",
        "epsilon",
    )


def test_header_records_the_precision_the_run_used():
    cfg = TrainConfig()
    cfg.training.mixed_precision = "bf16"
    facts = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}
    assert lora_metadata(cfg, facts)["ss_mixed_precision"] == "bf16"
    # A CPU without native bf16 computes in fp32; the header says what was computed.
    assert lora_metadata(cfg, facts | {"mixed_precision": "no"})["ss_mixed_precision"] == "no"
