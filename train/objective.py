"""The number a sweep optimizes, read from a finished run folder (`objective.kind` says which).

- `toy`: concept_score at weight 1 − fidelity_penalty × fidelity lost, where fidelity lost is base_fidelity
  at weight 0 minus at weight 1 (scores.json, as in the README's toy table). Higher is better.
- `validation_loss`: the last `loss/validation` in metrics.jsonl. Lower is better.
- `clip_score`: the final file's CLIP text-image score at weight 1 (scores.json, eval.clip_model): how well
  the pictures match their prompts, for real data without a toy scorer. Higher is better.
- `train_loss`: the last `loss/average` in metrics.jsonl (what `python -m train` always returned). Lower is better.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from data.errors import LoraSmithError
from train.run_contents import read_metrics

DIRECTIONS = {
    "toy": "maximize",
    "validation_loss": "minimize",
    "clip_score": "maximize",
    "train_loss": "minimize",
}


GRID_KINDS = ("toy", "clip_score")  # read from the eval grid's scores.json


class ObjectiveError(LoraSmithError):
    """The run finished but does not hold what its objective reads."""


@dataclass
class ObjectiveConfig:
    kind: str = "train_loss"  # toy | validation_loss | clip_score | train_loss
    direction: str = "minimize"  # maximize | minimize: must be the kind's own (the sweeper reads it)
    fidelity_penalty: float = 1.0  # toy: weight of the fidelity lost against the concept score
    failed_value: float = 1.0e6  # what a failed trial of a multirun returns: worse than any real value


def toy_objective(scores: dict, fidelity_penalty: float) -> float:
    """concept_score at weight 1 − fidelity_penalty × (base_fidelity at weight 0 − base_fidelity at weight 1)."""
    at0, at1 = scores.get("0.0", {}), scores.get("1.0", {})
    values = (at1.get("concept_score"), at0.get("base_fidelity"), at1.get("base_fidelity"))
    if None in values:
        raise ObjectiveError(
            "objective=toy needs the concept score at weight 1 and the base fidelity at weights 0 and 1: the "
            "eval prompts need some with the trigger word and some without"
        )
    concept, fidelity0, fidelity1 = values
    return concept - fidelity_penalty * (fidelity0 - fidelity1)


def last_metric(metrics_path: Path, key: str) -> float | None:
    """The value of `key` in the last line of metrics.jsonl that has it (None when no line has it)."""
    values = [row[key] for row in read_metrics(metrics_path) if row.get(key) is not None]
    return float(values[-1]) if values else None


def _weight_scores(run_dir: Path, what: str, writer: str) -> dict:
    path = run_dir / "scores.json"
    if not path.is_file():
        raise ObjectiveError(
            f"{what} reads {path}, which the run did not write ({writer} writes it at the end of training; "
            f"python -m train.evaluate run={run_dir} writes it for a finished run)"
        )
    return json.loads(path.read_text())["weight"]


def toy_score(cfg: ObjectiveConfig, run_dir: Path) -> float:
    return toy_objective(_weight_scores(run_dir, "objective=toy", "eval.scorer=toy"), cfg.fidelity_penalty)


def clip_score(cfg: ObjectiveConfig, run_dir: Path) -> float:
    scores = _weight_scores(run_dir, "objective=clip_score", "eval.clip_model")
    value = scores.get("1.0", {}).get("clip_score")
    if value is None:
        raise ObjectiveError(
            f"objective=clip_score reads the CLIP score at weight 1 of {run_dir / 'scores.json'}, which has "
            "none: eval.weights needs 1.0 and eval.clip_model a CLIP model"
        )
    return float(value)


def validation_loss(cfg: ObjectiveConfig, run_dir: Path) -> float:
    return _required_metric(run_dir, "loss/validation", "objective=validation_loss", "the run computed no "
                            "validation loss: give it a validation set, or choose objective=train_loss")  # fmt: skip


def train_loss(cfg: ObjectiveConfig, run_dir: Path) -> float:
    return _required_metric(run_dir, "loss/average", "objective=train_loss", "the run trained no step")


def _required_metric(run_dir: Path, key: str, what: str, fix: str) -> float:
    value = last_metric(run_dir / "metrics.jsonl", key)
    if value is None:
        raise ObjectiveError(
            f"{what} reads the last {key} of {run_dir / 'metrics.jsonl'}, which has none: {fix}"
        )
    return value


MEASURES = {
    "toy": toy_score, "validation_loss": validation_loss, "clip_score": clip_score, "train_loss": train_loss,
}  # fmt: skip


def measure(cfg: ObjectiveConfig, run_dir: Path) -> float:
    """The objective of the finished run in `run_dir`; a NaN (diverged run) counts as the failed value."""
    value = MEASURES[cfg.kind](cfg, run_dir)
    return cfg.failed_value if math.isnan(value) else value


def is_measured(cfg: ObjectiveConfig, eval_enabled: bool) -> bool:
    """False only for an objective read from the eval grid (toy, clip_score) of a run without one (a single
    run with eval.enabled=false, which the config checks allow outside a sweep)."""
    return cfg.kind not in GRID_KINDS or eval_enabled


def log_objective(cfg: ObjectiveConfig, run_dir: Path, metrics, step: int) -> float:
    """Measure the objective and log it as `objective` (metrics.jsonl and the tracker, where a wandb sweep
    agent reads its metric)."""
    value = measure(cfg, run_dir)
    metrics.log({"objective": value}, step)
    return value
