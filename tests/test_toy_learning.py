"""The toy world proves learning: both experiments, with their defaults, teach their concept (slow)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run_train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("experiment", ["char_lora", "style_lora"])
def test_experiment_learns_its_concept_and_keeps_the_base_world(experiment, tmp_path):
    result = run_train(tmp_path / "run", f"+experiment={experiment}", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())["weight"]
    assert scores["1.0"]["concept_score"] >= 0.8
    assert scores["0.0"]["concept_score"] <= 0.2
    # Weight 0 is the base model itself: the LoRA may cost at most 0.10 of base fidelity.
    assert scores["1.0"]["base_fidelity"] >= scores["0.0"]["base_fidelity"] - 0.10
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "eval/concept_score@1.0" in metrics
