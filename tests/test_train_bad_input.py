"""`python -m train` takes the user's values at their word: typed values win, bad ones are one clear line.

Each start of `python -m train` costs seconds, so the runs here are few and tiny: two short trainings that
check the command-line values reach the LoRA header and metrics.jsonl, and four refusals (exit status 2,
one `error:` line naming the key, no traceback, the dataset folder untouched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open

from tests.test_cli import run_train

TINY_TOY = ["logger=none", "eval.enabled=false", "dataset.toy_images=4", "dataset.toy_repeats=1"]
TINY_TOY += ["dataset.toy_reg_images=0", "training.batch_size=2"]


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _step_lines(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [row for row in map(json.loads, lines) if "loss/current" in row]


def test_max_train_steps_on_the_command_line_beats_the_experiments_epochs(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "+experiment=char_lora", *TINY_TOY, "training.max_train_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = _header(run_dir / "char_lora.safetensors")
    assert (meta["ss_steps"], meta["ss_max_train_steps"]) == ("2", "2")  # not char_lora's 24 epochs
    assert [row["step"] for row in _step_lines(run_dir)] == [1, 2]


def test_optimizer_lr_drives_both_parts_with_the_default_adamw(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["model=tiny", "dataset=toy_character", "name=lr_check", *TINY_TOY]
    result = run_train(run_dir, *overrides, "training.max_train_steps=2", "optimizer.lr=3e-4")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = _header(run_dir / "lr_check.safetensors")
    assert (meta["ss_learning_rate"], meta["ss_unet_lr"], meta["ss_text_encoder_lr"]) == ("0.0003",) * 3
    # The optimizer itself, as kohya writes it, not accelerate's AcceleratedOptimizer wrapper.
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01,betas=(0.9, 0.999),eps=1e-08)"
    rows = _step_lines(run_dir)
    assert len(rows) == 2 and meta["ss_steps"] == "2"
    assert rows[-1]["lr/unet"] == pytest.approx(3e-4) and rows[-1]["lr/textencoder"] == pytest.approx(3e-4)


def _folder_dataset(root: Path) -> Path:
    concept = root / "train" / "10_sls star"
    concept.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(concept / "a.png")
    (concept / "a.txt").write_text("sls star, red", encoding="utf-8")
    return root / "train"


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["training.max_train_epochs=3", "training.max_train_steps=5"], "training.max_train_steps=5"),
        (["optimizer.unet_lr=-1e-4"], "optimizer.unet_lr=-0.0001"),
        (["name=../x"], "name='../x'"),
        (["dataset.cache_latents=true", "dataset.color_aug=true"], "dataset.color_aug=true"),
        (["dataset.num_workers=-1"], "dataset.num_workers=-1"),  # was torch's ValueError traceback
    ],
    ids=[
        "steps-and-epochs",
        "negative-lr",
        "name-outside-run-folder",
        "cache-with-color-aug",
        "negative-workers",
    ],
)
def test_bad_input_is_one_error_line_and_leaves_the_dataset_alone(tmp_path, overrides, named):
    train_dir = _folder_dataset(tmp_path / "data")
    before = _snapshot(train_dir)
    run_dir = tmp_path / "runs" / "run"
    result = run_train(run_dir, "model=tiny", "logger=none", f"dataset.train_dir={train_dir}", *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], result.stderr
    assert _snapshot(train_dir) == before
    assert not list((tmp_path / "runs").rglob("*.safetensors")) and not (tmp_path / "runs" / "x").exists()
