"""Base models load from a diffusers folder through the same code path as a downloaded SD 1.5."""

from __future__ import annotations

import pytest
import torch

from inference.models.loading import load_base_model
from inference.models.tiny import build_tiny
from train.config import ModelConfig
from train.errors import ModelLoadError


def _save_as_diffusers_folder(folder):
    bundle = build_tiny(seed=5)
    bundle.unet.save_pretrained(folder / "unet")
    bundle.vae.save_pretrained(folder / "vae")
    bundle.text_encoder.save_pretrained(folder / "text_encoder")
    bundle.tokenizer.save_pretrained(folder / "tokenizer")
    bundle.noise_scheduler.save_pretrained(folder / "scheduler")
    return bundle


def test_diffusers_folder_round_trip(tmp_path):
    saved = _save_as_diffusers_folder(tmp_path / "model")
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(tmp_path / "model")))
    for a, b in (
        (saved.unet, loaded.unet),
        (saved.vae, loaded.vae),
        (saved.text_encoder, loaded.text_encoder),
    ):
        state_a, state_b = a.state_dict(), b.state_dict()
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    text = "sls toy, blue background"
    assert saved.tokenizer(text).input_ids == loaded.tokenizer(text).input_ids
    assert loaded.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert loaded.source == str(tmp_path / "model")


def test_folder_without_model_parts_names_what_is_missing(tmp_path):
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="missing vae/, text_encoder/, tokenizer/"):
        load_base_model(ModelConfig(kind="pretrained", path=str(tmp_path / "half")))


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="cannot load base model 'no-such-user/no-such-model'"):
        load_base_model(ModelConfig(kind="pretrained", path="no-such-user/no-such-model"))


def test_single_file_checkpoint_is_refused_with_the_conversion_hint(tmp_path):
    with pytest.raises(ModelLoadError, match="single-file checkpoint"):
        load_base_model(ModelConfig(kind="pretrained", path=str(tmp_path / "model.safetensors")))
