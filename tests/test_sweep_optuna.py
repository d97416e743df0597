"""Acceptance of the sweeps: `python -m train -m +experiment=char_lora hparams_search=char_lora_optuna`, six
trials as local processes (submitit), one forced to fail; the best trial beats char_lora as shipped, which
the sweep measures as its trial 0 at the same budget. Slow: about ten minutes of CPU time."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import pytest
import yaml
from omegaconf import OmegaConf

from tests.test_cli import REPO

SEARCH = REPO / "configs" / "hparams_search" / "char_lora_optuna.yaml"


def budget_overrides() -> list[str]:
    """The sweep's fixed `params` (its budget) and the baseline's epochs, as command-line overrides."""
    sweeper = yaml.safe_load(SEARCH.read_text())["hydra"]["sweeper"]
    fixed = [f"{k}={v}" for k, v in sweeper["params"].items() if "(" not in str(v)]
    epochs = sweeper["storage"]["trials"][0]["training.max_train_epochs"]
    return [*fixed, f"training.max_train_epochs={epochs}"]


def comparable(config: dict) -> dict:
    """A run's config without where it ran (its folder and the toy dataset inside it)."""
    config.pop("output_dir")
    config["dataset"]["train_dir"] = config["dataset"]["reg_dir"] = None
    return config


@pytest.mark.slow
def test_optuna_sweep_beats_char_lora_as_shipped_and_survives_a_failed_trial(tmp_path, compose_config):
    sweep = tmp_path / "sweep"
    # Trial 3's folder already holds an earlier run's LoRA: the run refuses it (a user error) and the
    # sweep must go on.
    (sweep / "3").mkdir(parents=True)
    (sweep / "3" / "char_lora.safetensors").write_bytes(b"an earlier run")
    command = [
        sys.executable, "-m", "train", "-m", "+experiment=char_lora", "hparams_search=char_lora_optuna",
        "hydra/launcher=local_parallel", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    began = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.time() - began
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n6-trial sweep: {elapsed:.0f} s wall\n" + (sweep / "results.md").read_text())

    rows = {int(r["trial"]): r for r in csv.DictReader((sweep / "results.csv").open())}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert rows[3]["status"] == "failed" and "already holds the LoRA files" in rows[3]["error"]
    assert float(rows[3]["objective"]) == -10.0  # objective=toy's failed_value
    assert all(rows[n]["status"] == "ok" for n in (0, 1, 2, 4, 5))

    # trial 0 is char_lora as shipped, at the sweep's budget
    baseline = compose_config("+experiment=char_lora", *budget_overrides())
    expected = comparable(OmegaConf.to_container(OmegaConf.structured(baseline)))
    assert comparable(OmegaConf.to_container(OmegaConf.load(sweep / "0" / "config.yaml"))) == expected

    objectives = {n: float(r["objective"]) for n, r in rows.items() if r["status"] == "ok"}
    best = max(objectives, key=objectives.get)
    assert best != 0 and objectives[best] > objectives[0]
    assert f"best: trial {best}" in (sweep / "results.md").read_text()
    page = (sweep / "index.html").read_text()
    assert page.count('<img src="') == 5  # a grid per finished trial
    assert (sweep / "optimization_results.yaml").is_file()
