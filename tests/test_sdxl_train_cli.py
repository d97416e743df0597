"""`python -m train model=tiny_sdxl`: an SDXL LoRA end to end through the real entry point."""

from __future__ import annotations

from safetensors import safe_open

from tests.test_cli import QUICK, run_train


def test_train_an_sdxl_lora_through_the_command_line(tmp_path):
    overrides = [o for o in QUICK if not o.startswith("training.max_train_epochs")]
    result = run_train(tmp_path, *overrides, "model=tiny_sdxl", "training.max_train_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "char_lora.safetensors"), framework="pt") as handle:
        metadata, keys = handle.metadata(), list(handle.keys())
    assert {key.split("_")[1] for key in keys} == {"unet", "te1", "te2"}  # kohya's SDXL prefixes
    assert any(key.startswith("lora_unet_input_blocks_") for key in keys)  # kohya's original-layout names
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert (tmp_path / "scores.json").is_file()  # the end-of-run grid rendered through the SDXL engine
