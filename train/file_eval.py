"""One saved file measured: its grid (eval.prompts x eval.weights) and, per weight, every configured score.

Per weight of the file: the toy world's `concept_score` / `base_fidelity` (eval.scorer=toy), `clip_score`
and `identity` (eval.clip_model / eval.identity_model, train/image_scores.py) and `validation_loss` (the
held-out pictures with the file applied at that weight, train/validation.py; weight 0 is the base model).
Both the end of training and `python -m train.evaluate` measure files with `evaluate_file`, and write what
they found with `write_scores_json` and `file_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from PIL import Image

from data.atomic import write_text_atomic
from inference.lora import applied_lora, load_lora_file
from inference.models.bundle import ModelBundle
from train.config import TrainConfig
from train.eval import render_eval_grid, score_metrics
from train.image_scores import image_scores
from train.validation import HeldOutCaptions, HeldOutPicture, validation_loss

WeightScores = dict[str, dict[str, float | None]]  # "1.0" → {"concept_score": …, "validation_loss": …}


@dataclass
class EvalContext:
    """What every file of a run is measured with."""

    cfg: TrainConfig
    held_out: list[HeldOutPicture] = field(default_factory=list)
    captions: HeldOutCaptions | None = None  # the run's tokenisation of the held-out captions
    schedule: DDPMScheduler | None = None  # the schedule training used (zero terminal SNR included)
    scorers: dict = field(default_factory=dict)  # train/image_scores.py load_scorers
    references: torch.Tensor | None = None  # identity embeddings of the training pictures
    autocast: Callable[[], AbstractContextManager] = nullcontext


@dataclass
class FileEval:
    """One file's grid and scores per weight."""

    path: Path
    grid_path: Path
    weights: WeightScores
    step: int | None = None
    epoch: int | None = None


def identity_references(scorers: dict, dataset) -> torch.Tensor | None:
    """The identity embeddings of the dataset's training pictures, held-out ones included (not reg)."""
    if "identity" not in scorers:
        return None
    pictures = [p for subset in dataset.train_subsets + dataset.validation_subsets for p in subset.images]
    return scorers["identity"].embed([Image.open(p).convert("RGB") for p in pictures])


def _column_images(paths: list[list[Path]], column: int) -> list[Image.Image]:
    return [Image.open(row[column]).convert("RGB") for row in paths]


def file_validation_loss(bundle: ModelBundle, ctx: EvalContext, lora, weight: float) -> float:
    """The held-out loss with the LoRA file patched in at `weight` (0: the base model)."""
    with applied_lora(bundle, lora, weight, weight):
        return validation_loss(
            ctx.held_out, bundle, ctx.schedule or bundle.noise_scheduler, ctx.captions, ctx.cfg.model.clip_skip,
            ctx.autocast,
        )  # fmt: skip


def evaluate_file(
    bundle: ModelBundle, ctx: EvalContext, path: Path, out_dir: Path, file_format: str = "lora",
    step: int | None = None, epoch: int | None = None,
) -> FileEval:  # fmt: skip
    """Render the file's grid into `out_dir` and measure it at every weight of eval.weights."""
    e = ctx.cfg.eval
    outcome = render_eval_grid(bundle, ctx.cfg, path, out_dir, file_format)
    weights = [float(w) for w in e.weights]
    scores: WeightScores = {str(w): dict((outcome.scores or {}).get(str(w), {})) for w in weights}
    prompts = [prompt for prompt in e.prompts for _ in e.seeds]  # the grid's rows
    lora = load_lora_file(path) if ctx.held_out and file_format == "lora" else None
    for column, weight in enumerate(weights):
        if ctx.scorers:
            images = _column_images(outcome.image_paths, column)
            scores[str(weight)].update(image_scores(ctx.scorers, images, prompts, ctx.references))
        if lora is not None:
            scores[str(weight)]["validation_loss"] = file_validation_loss(bundle, ctx, lora, weight)
    return FileEval(path, outcome.grid_path, scores, step, epoch)


def file_metrics(result: FileEval, with_validation: bool = True) -> dict[str, float]:
    """metrics.jsonl names: `eval/<score>@<weight>`, and `loss/validation` (the file at weight 1) when asked."""
    values = score_metrics(result.weights)
    loss = result.weights.get("1.0", {}).get("validation_loss")
    if with_validation and loss is not None:
        values["loss/validation"] = loss
    return values


def write_scores_json(results: list[FileEval], path: Path, final_name: str) -> Path:
    """`scores.json`: `files` holds every measured file (step, epoch, grid, scores per weight); `weight` the
    final file's scores per weight, where it was measured (what the end of training always wrote)."""
    document: dict = {}
    final = [r for r in results if r.path.name == final_name]
    if final:
        document["weight"] = final[0].weights
    document["files"] = {
        r.path.name: {
            "step": r.step,
            "epoch": r.epoch,
            "grid": _relative(r.grid_path, path.parent),
            "weight": r.weights,
        }  # fmt: skip
        for r in results
    }
    return write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
