"""Validation during training, end to end (slow): it falls while the toy character is learned, it changes
no trained weight, and a run killed and resumed logs it and saves exactly what an uninterrupted one does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from .test_buckets_training import folders  # noqa: F401  (the mixed-size folder fixture)
from .test_cli import QUICK, REPO, run_train
from .test_resume import NAME, kill_after_step, resumable, start_train

pytestmark = pytest.mark.slow


def validation_losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss/validation"]) for m in lines if "loss/validation" in m]


def test_validation_loss_falls_while_the_toy_character_is_learned(tmp_path):
    began = time.time()
    command = [sys.executable, "-m", "train", "+experiment=char_lora", "logger=none", "dataset.validation_split=0.2",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # about 2 minutes alone on 2 cores; more when they are shared, hence a longer limit than run_train's
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = validation_losses(tmp_path / "run")
    assert len(losses) == 24  # every epoch, kohya's default
    first, last = losses[0][1], losses[-1][1]
    print(f"loss/validation first {first:.4f} (step {losses[0][0]}), last {last:.4f} (step {losses[-1][0]}), "
          f"min {min(v for _, v in losses):.4f}; {time.time() - began:.0f} s")  # fmt: skip
    assert last < first
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["weight"]
    assert (
        scores["1.0"]["validation_loss"] < scores["0.0"]["validation_loss"]
    )  # the LoRA beats the base model


def test_validating_every_step_changes_no_trained_weight(tmp_path):
    split = ["dataset.validation_split=0.25", "eval.enabled=false"]
    often = run_train(tmp_path / "often", *QUICK, *split, "training.validate_every_n_steps=1")
    rarely = run_train(tmp_path / "rarely", *QUICK, *split, "training.validate_every_n_epochs=100")
    assert often.returncode == 0 and rarely.returncode == 0, often.stderr[-2000:] + rarely.stderr[-2000:]
    assert [s for s, _ in validation_losses(tmp_path / "often")] == list(range(1, 13))
    assert [s for s, _ in validation_losses(tmp_path / "rarely")] == [12]  # only the end of the run
    assert validation_losses(tmp_path / "often")[-1] == validation_losses(tmp_path / "rarely")[-1]
    for name in ("char_lora.safetensors", "char_lora-000001.safetensors"):
        a, b = load_file(tmp_path / "often" / name), load_file(tmp_path / "rarely" / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_a_killed_run_with_validation_resumes_to_the_same_bytes_and_lines(folders, tmp_path):  # noqa: F811
    overrides = [*resumable(*folders), "dataset.validation_split=0.3", "training.validate_every_n_steps=2"]
    whole = tmp_path / "whole"
    result = run_train(whole, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert validation_losses(whole)
    killed = tmp_path / "killed"
    killed.mkdir()
    process = start_train(killed, *overrides, "resume=auto")
    kill_after_step(process, killed, random.Random(7).randint(14, 20))
    process.wait(timeout=300)
    assert process.returncode == -signal.SIGKILL
    final = run_train(killed, *overrides, "resume=auto")
    assert final.returncode == 0 and "resuming from" in final.stdout, final.stderr[-3000:]
    assert (killed / f"{NAME}.safetensors").read_bytes() == (whole / f"{NAME}.safetensors").read_bytes()
    assert validation_losses(killed) == validation_losses(whole)
