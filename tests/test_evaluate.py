"""`python -m train.evaluate run=DIR` on a QUICK run with a validation split: a grid per saved file, scores per
file and weight, each file's metrics at its step; the validation loss during training; one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .test_cli import QUICK, REPO, run_train

# A training run and an evaluation in subprocesses take 30-60 s on 2 shared cores: over the fast suite's budget.
SLOW = pytest.mark.slow
SPLIT = ["dataset.validation_split=0.25", "eval.prompts=[sls star, red circle]", "eval.steps=2"]


def run_evaluate(*overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "train.evaluate", *overrides]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A QUICK run (epoch file + final file, one of 4 pictures held out), then evaluated at weights 0 and 1."""
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    trained = run_train(run_dir, *QUICK, *SPLIT)
    assert trained.returncode == 0, trained.stderr[-3000:]
    during = metrics(run_dir)
    result = run_evaluate(f"run={run_dir}", "eval.weights=[0,1]")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, during, result


@SLOW
def test_training_logs_the_validation_loss_every_epoch(evaluated):
    _, during, _ = evaluated
    validation = [(m["step"], m["loss/validation"]) for m in during if "loss/validation" in m]
    assert [step for step, _ in validation] == [6, 12]  # kohya's default: after every epoch (6 steps each)
    assert all(loss > 0 for _, loss in validation)


@SLOW
def test_evaluate_renders_a_grid_per_file_and_scores_each_weight(evaluated):
    run_dir, _, result = evaluated
    for stem in ("char_lora-000001", "char_lora"):
        assert Image.open(run_dir / "eval" / stem / "grid.png").width > 2 * 64  # 2 weights (columns) + labels
        assert len(list((run_dir / "eval" / stem).glob("*-w*.png"))) == 4  # 2 prompts x 2 weights
        assert str(run_dir / "eval" / stem / "grid.png") in result.stdout
    scores = json.loads((run_dir / "scores.json").read_text())
    files = scores["files"]
    assert [(name, f["step"], f["epoch"]) for name, f in files.items()] == [
        ("char_lora-000001.safetensors", 6, 1),
        ("char_lora.safetensors", 12, 2),
    ]
    for entry in files.values():
        assert set(entry["weight"]) == {"0.0", "1.0"}
        for values in entry["weight"].values():
            assert set(values) == {"concept_score", "base_fidelity", "validation_loss"}
        # weight 0 is the base model: the same loss for every file
    base = {f["weight"]["0.0"]["validation_loss"] for f in files.values()}
    assert len(base) == 1
    assert scores["weight"] == files["char_lora.safetensors"]["weight"]  # what the end of training reads


@SLOW
def test_evaluate_appends_each_files_metrics_at_its_step_and_matches_training(evaluated):
    run_dir, during, _ = evaluated
    appended = metrics(run_dir)[len(during) :]
    assert [(m["step"], m["file"]) for m in appended] == [
        (6, "char_lora-000001.safetensors"),
        (12, "char_lora.safetensors"),
    ]
    trained = {m["step"]: m["loss/validation"] for m in during if "loss/validation" in m}
    for record in appended:
        assert record["loss/validation"] == record["eval/validation_loss@1.0"]
        # the file patched into the base model measures what the training's own layers measured
        assert record["loss/validation"] == pytest.approx(trained[record["step"]], rel=1e-4)
        assert {"eval/concept_score@1.0", "eval/base_fidelity@0.0"} <= set(record)


@SLOW
def test_evaluating_the_same_file_again_gives_the_same_number(evaluated, tmp_path):
    from train.run_eval import evaluate_run

    run_dir, _, _ = evaluated
    before = json.loads((run_dir / "scores.json").read_text())["files"]
    again = evaluate_run(run_dir, {"weights": [1.0], "prompts": ["sls star"], "scorer": None})
    for result in again.files:
        expected = before[result.path.name]["weight"]["1.0"]["validation_loss"]
        assert result.weights["1.0"]["validation_loss"] == expected


def test_a_missing_or_foreign_folder_is_one_error_line(tmp_path):
    missing = run_evaluate(f"run={tmp_path / 'nowhere'}")
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("error: run=")
        and "Traceback" not in missing.stderr
    )
    assert "is not a folder" in missing.stderr
    foreign = run_evaluate(f"run={tmp_path}")
    assert foreign.returncode == 2 and "has no config.yaml" in foreign.stderr
    assert len(foreign.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()  # nothing is created
    (tmp_path / "config.yaml").write_text("name: lora\n")
    other = run_evaluate(f"run={tmp_path}", "eval=none", "+training.batch_size=4")
    assert other.returncode == 2 and "takes run= and eval.* keys" in other.stderr  # not silently ignored
    assert "eval, training.batch_size" in other.stderr


@SLOW
def test_a_run_without_saved_files_is_refused(evaluated, tmp_path):
    from data.errors import LoraSmithError
    from train.run_eval import evaluate_run

    run_dir, _, _ = evaluated
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(LoraSmithError, match="holds no char_lora"):
        evaluate_run(empty)


def test_saved_files_are_found_in_step_order_with_their_header_steps(tmp_path):
    import torch
    from safetensors.torch import save_file

    from data.errors import LoraSmithError
    from train.saved_files import saved_files

    def save(name: str, step: int, epoch: int) -> None:
        save_file({"w": torch.zeros(1)}, tmp_path / name, {"ss_steps": str(step), "ss_epoch": str(epoch)})

    save("smith.safetensors", 30, 3)
    save("smith-000002.safetensors", 20, 2)
    save("smith-step00000005.safetensors", 5, 1)
    save("smith-000001.safetensors", 10, 1)
    save("smithy.safetensors", 1, 1)  # another run's name
    (tmp_path / "smith-000001-state").mkdir()
    found = saved_files(tmp_path, "smith")
    assert [(f.path.name, f.step, f.epoch, f.final) for f in found] == [
        ("smith-step00000005.safetensors", 5, 1, False),
        ("smith-000001.safetensors", 10, 1, False),
        ("smith-000002.safetensors", 20, 2, False),
        ("smith.safetensors", 30, 3, True),
    ]
    (tmp_path / "smith-000003.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoraSmithError, match="smith-000003.safetensors cannot be read"):
        saved_files(tmp_path, "smith")
