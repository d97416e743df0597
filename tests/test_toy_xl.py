"""The toy SDXL: its build trains with the engine's conditioning and writes a loadable, checksummed SDXL
folder (fast, tiny budget); `+experiment=char_lora_xl` teaches the character on the built model (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from inference.models import loading
from inference.models.spec import ModelConfig
from inference.sdxl_text import encode_sdxl_texts
from inference.text_encoding import TextOptions
from tests.test_cli import run_train
from train.toy_base.export import file_checksums
from train.toy_base.sdxl_build import SdxlBuildSettings, _initial_model, build_toy_xl
from train.toy_base.sdxl_training import sdxl_conditioning, second_token_ids


def test_training_conditioning_is_what_the_engine_renders_with():
    model = _initial_model(SdxlBuildSettings())
    texts = ["sls star, blue background, large", "a small red circle on a white background"]
    ids = model.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert model.tokenizer_2.pad_token_id == 0 and (second_token_ids(ids, model.tokenizer_2) == 0).any()
    with torch.no_grad():
        crossattn, pooled = sdxl_conditioning(
            model.text_encoder, model.text_encoder_2, ids, second_token_ids(ids, model.tokenizer_2)
        )
        engine = encode_sdxl_texts(model, texts, TextOptions())
    for row, text in enumerate(texts):
        assert torch.allclose(engine[text][0][0], crossattn[row], atol=1e-6)
        assert torch.allclose(engine[text][1][0], pooled[row], atol=1e-6)


def test_tiny_sdxl_build_writes_a_loadable_sdxl_folder(tmp_path, monkeypatch):
    settings = SdxlBuildSettings(
        out=tmp_path / "toy_xl", base_pictures=32, unet_steps=2, unet_batch=4, fidelity_prompts=2,
        fidelity_seeds=1,
    )  # fmt: skip
    report = build_toy_xl(settings, command="python scripts/build_toy.py --sdxl (test)")
    assert 0.0 <= report["base_fidelity"] <= 1.0
    folder = settings.out
    listed = dict(
        reversed(line.split("  ", 1)) for line in (folder / "CHECKSUMS.sha256").read_text().splitlines()
    )
    assert listed == file_checksums(folder)
    assert {"README.md", "base_grid.png", "tokenizer_2/vocab.json", "text_encoder_2/config.json"} <= set(
        listed
    )
    assert {oct(p.stat().st_mode & 0o777) for p in folder.rglob("*") if p.is_file()} == {"0o644"}
    assert not [p for p in tmp_path.iterdir() if p.name != "toy_xl"]  # no staging left behind
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    # The VAE is models/toy's, byte for byte (its own scaling factor).
    assert (folder / "vae" / "config.json").read_bytes() == (
        settings.base / "vae" / "config.json"
    ).read_bytes()
    monkeypatch.setattr(loading, "TOY_XL_MODEL_DIR", folder)
    bundle = loading.load_base_model(ModelConfig(kind="toy_xl"))
    assert bundle.base_model_version == "sdxl_base_v1-0" and bundle.tokenizer_2.pad_token == "!"
    assert bundle.unet.config.addition_embed_type == "text_time"
    assert bundle.unet.config.cross_attention_dim == 128  # both encoders' widths side by side
    from inference.cli import load_model

    engine_model = load_model("toy_xl", "cpu")  # `python -m inference model=toy_xl`
    assert engine_model.text_encoder_2 is not None and engine_model.base_model_version == "sdxl_base_v1-0"


def test_build_script_sdxl_flag_builds_the_toy_sdxl_with_its_settings(tmp_path, monkeypatch):
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_toy.py"
    spec = importlib.util.spec_from_file_location("build_toy_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(
        "train.toy_base.sdxl_build.build_toy_xl",
        lambda settings, command: calls.append((settings, command)) or {},
    )
    argv = ["--sdxl", "--out", str(tmp_path / "xl"), "--seed", "3", "--unet-steps", "7"]
    monkeypatch.setattr(sys, "argv", ["build_toy.py", *argv])
    module.main()
    ((settings, command),) = calls
    assert (settings.out, settings.seed, settings.unet_steps) == (tmp_path / "xl", 3, 7)
    assert command == "python scripts/build_toy.py " + " ".join(argv)


@pytest.mark.slow  # needs models/toy_xl (scripts/build_toy.py --sdxl); about 6 min (2400 steps + eval)
def test_char_lora_xl_learns_the_character_and_keeps_the_base_world(tmp_path):
    result = run_train(tmp_path / "run", "+experiment=char_lora_xl", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["weight"]
    assert scores["1.0"]["concept_score"] >= 0.8
    assert scores["0.0"]["concept_score"] <= 0.2
    assert scores["1.0"]["base_fidelity"] >= scores["0.0"]["base_fidelity"] - 0.10
