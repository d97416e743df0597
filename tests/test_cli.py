"""`python -m train` end to end, through the real entry point, on the tiny model and the toy dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "+experiment=char_lora",
    "logger=none",
    "dataset.toy_images=4",
    "dataset.toy_repeats=2",
    "dataset.toy_reg_images=4",
    "training.max_train_epochs=2",
    "training.batch_size=2",
    "training.save_every_n_epochs=1",
    "eval.steps=3",
    "eval.seeds=[1]",
]


def run_train(run_dir: Path, *overrides: str, env: dict | None = None, launcher: list[str] | None = None):
    command = (launcher or [sys.executable]) + ["-m", "train", *overrides, f"hydra.run.dir={run_dir}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    result = run_train(run_dir, *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_train_writes_lora_grid_and_run_folder(quick_run):
    run_dir, result = quick_run
    final = run_dir / "char_lora.safetensors"
    assert final.is_file() and (run_dir / "char_lora-000001.safetensors").is_file()
    assert not (run_dir / "char_lora-000002.safetensors").exists()  # the last epoch is the final file
    for line in ("LoRA:", "grid:", "run folder:"):
        assert line in result.stdout
    assert "kernels-community" not in result.stdout + result.stderr  # offline: no word on optional kernels
    assert str(final) in result.stdout
    grid = Image.open(run_dir / "eval" / "grid.png")
    prompts = len(OmegaConf.load(run_dir / "config.yaml").eval.prompts)  # the experiment's, one seed each
    assert prompts >= 8 and grid.height > grid.width  # a row per prompt, a column per LoRA weight
    assert len(list((run_dir / "eval").glob("*-w*.png"))) == prompts * 3
    scores = json.loads((run_dir / "scores.json").read_text())["weight"]
    assert set(scores) == {"0.0", "0.5", "1.0"}
    assert all(0.0 <= v["concept_score"] <= 1.0 and 0.0 <= v["base_fidelity"] <= 1.0 for v in scores.values())
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert (
        len([m for m in metrics if "loss/current" in m]) == 16
    )  # 2 epochs x (4 images x 2 repeats + 8 reg samples) / batch 2
    config = (run_dir / "config.yaml").read_text()
    assert "char_lora" in config and "dim: 8" in config
    with safe_open(str(final), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_steps"] == "16" and meta["ss_epoch"] == "2" and meta["ss_seed"] == "42"
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8.0"


def test_same_config_and_seed_give_byte_identical_lora(quick_run, tmp_path):
    run_dir, _ = quick_run
    again = run_train(tmp_path / "again", *QUICK)
    assert again.returncode == 0, again.stderr[-3000:]
    first = (run_dir / "char_lora.safetensors").read_bytes()
    second = (tmp_path / "again" / "char_lora.safetensors").read_bytes()
    assert first == second
    assert (run_dir / "char_lora-000001.safetensors").read_bytes() == (
        tmp_path / "again" / "char_lora-000001.safetensors"
    ).read_bytes()


@pytest.mark.slow  # make test-full: two more training runs
def test_other_seed_gives_other_lora(quick_run, tmp_path):
    run_dir, _ = quick_run
    other = run_train(tmp_path / "other", *QUICK, "eval.enabled=false", "seed=7")
    assert other.returncode == 0, other.stderr[-3000:]
    assert (run_dir / "char_lora.safetensors").read_bytes() != (
        tmp_path / "other" / "char_lora.safetensors"
    ).read_bytes()


def test_accelerate_launch_with_wandb_offline(tmp_path):
    accelerate = str(Path(sys.executable).with_name("accelerate"))  # the console script users run
    launcher = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--cpu"]
    overrides = [o for o in QUICK if not o.startswith("logger=")] + ["eval.enabled=false", "logger=wandb"]
    result = run_train(tmp_path / "run", *overrides, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "char_lora.safetensors").is_file()
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline_runs) == 1 and offline_runs[0].stat().st_size > 0


def test_max_train_steps_and_tensorboard(tmp_path):
    overrides = [o for o in QUICK if not o.startswith(("logger=", "training.max_train_epochs"))]
    overrides += ["logger=tensorboard", "training.max_train_epochs=null", "training.max_train_steps=3"]
    overrides += ["eval.enabled=false"]
    result = run_train(tmp_path / "run", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "run" / "char_lora.safetensors"), framework="pt") as f:
        assert f.metadata()["ss_steps"] == "3"
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))
