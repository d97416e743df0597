"""Sweeps: the objective a run returns, the results table a multirun keeps, and a grid multirun through the
real `python -m train -m` with a failing trial (the 6-trial optuna sweep is in test_sweep_optuna.py, slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from tests.test_cli import QUICK, REPO, run_train
from train.errors import ConfigError
from train.objective import ObjectiveConfig, ObjectiveError, measure, toy_objective
from train.sweep_results import SweepResults

PROMPTS = 'eval.prompts=["sls star, blue background, large","red circle, blue background, large"]'  # 4 images
SCORES = {
    "0.0": {"concept_score": 0.0, "base_fidelity": 0.9},
    "1.0": {"concept_score": 0.8, "base_fidelity": 0.7},
}


def test_toy_objective_is_concept_minus_penalty_times_fidelity_lost(tmp_path):
    assert toy_objective(SCORES, 1.0) == pytest.approx(0.8 - 0.2)
    assert toy_objective(SCORES, 2.5) == pytest.approx(0.8 - 2.5 * 0.2)
    (tmp_path / "scores.json").write_text(json.dumps({"weight": SCORES}))
    assert measure(ObjectiveConfig("toy", "maximize", 0.5), tmp_path) == pytest.approx(0.7)


def test_loss_objectives_read_the_last_value_and_name_what_is_missing(tmp_path):
    lines = [{"step": 1, "loss/average": 0.3}, {"step": 2, "loss/average": 0.2, "loss/validation": 0.25},
             {"step": 3, "loss/average": 0.1}, {"step": 3, "eval/concept_score@1.0": 1.0}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert measure(ObjectiveConfig("train_loss"), tmp_path) == pytest.approx(0.1)
    assert measure(ObjectiveConfig("validation_loss"), tmp_path) == pytest.approx(0.25)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/average": float("nan")}) + "\n")
    assert measure(ObjectiveConfig("train_loss", failed_value=7.0), tmp_path) == 7.0  # a diverged run
    with pytest.raises(ObjectiveError, match="loss/validation"):
        measure(ObjectiveConfig("validation_loss"), tmp_path)
    with pytest.raises(ObjectiveError, match=f"python -m train.evaluate run={tmp_path} writes it"):
        measure(ObjectiveConfig("toy", "maximize"), tmp_path)
    with pytest.raises(ObjectiveError, match="scores.json"):
        measure(ObjectiveConfig("clip_score", "maximize"), tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"weight": {"1.0": {"clip_score": 31.5}}}))
    assert measure(ObjectiveConfig("clip_score", "maximize"), tmp_path) == 31.5
    (tmp_path / "scores.json").write_text(json.dumps({"weight": {"1.0": {"concept_score": 1.0}}}))
    with pytest.raises(ObjectiveError, match="CLIP score at weight 1"):
        measure(ObjectiveConfig("clip_score", "maximize"), tmp_path)


def test_objective_checks(compose_config):
    assert compose_config("+experiment=char_lora").objective.kind == "toy"
    assert compose_config("dataset=toy_character").objective.kind == "train_loss"
    with pytest.raises(ConfigError, match="eval.scorer=toy"):
        compose_config("dataset=toy_character", "objective=toy")
    with pytest.raises(ConfigError, match="objective.direction=maximize"):
        compose_config("+experiment=char_lora", "objective.direction=minimize")
    with pytest.raises(ConfigError, match="lacks"):
        compose_config("+experiment=char_lora", "eval.weights=[0.5,1.0]")
    # A single run may skip its eval grid; only a sweep, which needs the number, refuses that.
    assert not compose_config("+experiment=char_lora", "eval.enabled=false").eval.enabled
    with pytest.raises(ConfigError, match="needs held-out pictures"):
        compose_config("dataset=toy_character", "objective=validation_loss")
    assert (
        compose_config(
            "dataset=toy_character", "objective=validation_loss", "dataset.validation_split=0.2"
        ).objective.kind
        == "validation_loss"
    )
    with pytest.raises(ConfigError, match="needs eval.clip_model"):
        compose_config("+experiment=char_lora", "objective=clip_score")


def _job(sweep: Path, number: int, overrides: list[str], value, status=JobStatus.COMPLETED):
    """What Hydra hands a callback when a job of a multirun ends."""
    config = OmegaConf.create({
        "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}, "job": {"num": number},
                  "runtime": {"output_dir": str(sweep / str(number))}, "overrides": {"task": overrides}},
        "objective": {"direction": "maximize"},
    })  # fmt: skip
    (sweep / str(number)).mkdir(parents=True, exist_ok=True)
    job = JobReturn(overrides=overrides, status=status, _return_value=value)
    return config, job


def test_callback_tables_mark_best_and_failed_trials_and_escape_html(tmp_path):
    sweep, callback = tmp_path / "sweep", SweepResults()
    common = ["+experiment=char_lora", "logger=none"]
    ends = [
        _job(sweep, 0, [*common, "optimizer.unet_lr=0.001", "name=<b>x</b>"], 0.25),
        _job(sweep, 1, [*common, "optimizer.unet_lr=0.00312345678", "name=<b>x</b>"], 0.5),
        _job(sweep, 2, [*common, "optimizer.unet_lr=0.1", "name=<b>x</b>"], -10.0),
        _job(
            sweep,
            3,
            [*common, "optimizer.unet_lr=0.2", "name=<b>x</b>"],
            RuntimeError("boom"),
            JobStatus.FAILED,
        ),
    ]
    (sweep / "2" / "failure.txt").write_text("network.dim=-1 must be a positive number\n\ntraceback")
    (sweep / "1" / "eval").mkdir()
    (sweep / "1" / "eval" / "grid.png").write_bytes(b"png")
    (sweep / "1" / "report.html").write_text("<html></html>")
    (sweep / "4").mkdir()  # a trial whose process died: no record
    for config, job in ends:
        callback.on_job_end(config, job)
    callback.on_multirun_end(ends[0][0])
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed", "died"]
    assert rows[1]["optimizer.unet_lr"] == "0.00312345678" and "logger" not in rows[0]  # only what varies
    assert rows[2]["objective"] == "-10" and rows[2]["error"].startswith("network.dim=-1")
    assert rows[3]["error"] == "RuntimeError: boom" and rows[3]["run folder"] == "3"
    md = (sweep / "results.md").read_text()
    assert "best: trial 1, objective 0.5" in md and "| 1 | **best** | **0.5** | 0.003123 |" in md
    page = (sweep / "index.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" not in page  # constant overrides are not shown
    assert page.index("<td>1</td>") < page.index("<td>0</td>") < page.index("<td>2</td>")  # best first
    assert (
        "<td>0.003123</td>" in page
        and '<img src="1/eval/grid.png"' in page
        and 'href="1/report.html"' in page
        and 'href="0/"' in page
    )
    assert "/tmp" not in page and str(tmp_path) not in page  # relative links only


def test_index_page_escapes_parameter_values(tmp_path):
    sweep, callback = tmp_path / "sweep", SweepResults()
    for number, name in enumerate(["<script>alert(1)</script>", "a&b"]):
        callback.on_job_end(*_job(sweep, number, [f"name={name}"], float(number)))
    page = (sweep / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page


def test_grid_multirun_with_a_failing_trial_writes_the_results_table(tmp_path):
    """`python -m train -m … network.dim=8,-1`: trial 1 fails with one line, the sweep finishes, both are in
    the table."""
    sweep = tmp_path / "sweep"
    quick = [o for o in QUICK if not o.startswith(("training.max_train_epochs", "training.save_every"))]
    result = run_train(
        tmp_path / "unused", "-m", *quick, "training.max_train_epochs=1", "eval.weights=[0.0,1.0]", PROMPTS,
        "network.dim=8,-1", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [line for line in result.stderr.splitlines() if line.startswith("trial 1 failed:")]
    assert len(failed) == 1 and "network.dim=-1" in failed[0] and "Traceback" not in result.stderr
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["trial"], r["status"], r["network.dim"]) for r in rows] == [
        ("0", "ok", "8"),
        ("1", "failed", "-1"),
    ]
    assert rows[1]["objective"] == "-10"  # objective=toy's failed_value
    scores = json.loads((sweep / "0" / "scores.json").read_text())["weight"]
    assert float(rows[0]["objective"]) == pytest.approx(toy_objective(scores, 1.0), abs=1e-5)
    assert (sweep / "1" / "failure.txt").read_text().startswith("network.dim=-1 must be")
    assert (sweep / "results.md").is_file() and '<img src="0/eval/grid.png"' in (
        sweep / "index.html"
    ).read_text()
    logged = [json.loads(line) for line in (sweep / "0" / "metrics.jsonl").open() if "objective" in line]
    assert logged[-1]["objective"] == pytest.approx(float(rows[0]["objective"]), abs=1e-5)


def test_wandb_sweep_runs_python_m_train_with_hydra_overrides_of_real_keys(compose_config):
    sweep = yaml.safe_load((REPO / "configs" / "sweeps" / "char_lora_wandb.yaml").read_text())
    assert sweep["command"][1:4] == ["python", "-m", "train"] and sweep["command"][-1] == "${args_no_hyphens}"
    assert sweep["metric"]["name"] == "objective" and sweep["metric"]["goal"] == "maximize"
    fixed = [c for c in sweep["command"][4:-1] if not c.startswith("logger")]
    for key, space in sweep["parameters"].items():
        value = space["values"][0] if "values" in space else space["min"]
        cfg = compose_config(*fixed, f"{key}={value}")  # every parameter is a key the config knows
        if "." in key:
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value


def test_a_crashing_trial_prints_one_line_and_returns_the_failed_value(tmp_path, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from train.trial import run_trial

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", ["+experiment=char_lora"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.job.num = str(tmp_path), 4

    def crash(_cfg):
        raise RuntimeError("CUDA out of memory")

    HydraConfig.instance().set_config(cfg)
    try:
        assert run_trial(crash, cfg) == -10.0  # objective=toy's failed_value
    finally:
        HydraConfig.instance().cfg = None
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trial 4 failed: RuntimeError: CUDA out of memory ({tmp_path / 'failure.txt'})"]
    record = (tmp_path / "failure.txt").read_text()
    assert record.startswith("RuntimeError: CUDA out of memory\n") and "Traceback" in record
