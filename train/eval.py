"""After training: render the eval grid (prompts × weights of the saved file) and, for the toy world, score it.

The file loads as its network's format says: a LoRA through the engine's LoRA loader (weight = LoRA
strength), a textual-inversion embedding through its embeddings (weight = the trigger's strength, 0 = off).
A full fine-tune has no weight to turn: its grid has the base model as weight 0 (loaded again from
`model`) and the fine-tuned model as weight 1, so scores.json reads as a LoRA's at those two weights.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from inference.embedding_grid import embedding_columns
from inference.lora_grid import GridColumn, LoraGridResult, lora_columns, render_columns
from inference.models.bundle import ModelBundle
from inference.models.loading import load_base_model
from inference.txt2img import GenerationParams
from train.config import TrainConfig
from train.noise import predicting_v

log = logging.getLogger(__name__)


@dataclass
class EvalOutcome:
    """The grid and, when a scorer is configured, `scores[weight] = {"concept_score": …, "base_fidelity": …}`."""

    grid_path: Path
    scores: dict[str, dict[str, float | None]] | None = None
    image_paths: list[list[Path]] = field(default_factory=list)  # [row][weight column], rows prompt x seed


def render_eval_grid(
    bundle: ModelBundle, cfg: TrainConfig, path: Path, out_dir: Path, file_format: str = "lora"
) -> EvalOutcome:
    """Render `cfg.eval.prompts` × `cfg.eval.weights` with the saved file (a LoRA or an embedding), then
    score if asked."""
    bundle.freeze()
    e = cfg.eval
    weights = list(e.weights)
    if file_format == "embedding":
        columns = embedding_columns(bundle, path, weights, e.negative_prompt, e.steps)
    else:
        columns = lora_columns(bundle, path, weights)
    settings = _settings(cfg, Path(bundle.source).name or bundle.source)
    result = render_columns(columns, settings, list(e.prompts), list(e.seeds), out_dir, e.batch_size, "eval")
    scores = score_grid(result, list(e.prompts), list(e.seeds), weights) if e.scorer == "toy" else None
    return EvalOutcome(result.grid_path, scores, result.image_paths)


def _settings(cfg: TrainConfig, model_name: str) -> GenerationParams:
    e, size = cfg.eval, cfg.dataset.resolution
    return GenerationParams(
        "", e.negative_prompt, 0, e.steps, e.cfg_scale, e.width or size, e.height or size,
        cfg.model.clip_skip, e.sampler, model_name, scheduler=e.scheduler,
    )  # fmt: skip


def load_eval_base(cfg: TrainConfig, device: torch.device) -> ModelBundle:
    """The base model as training loaded it (v-prediction included), frozen, on `device`."""
    base = load_base_model(cfg.model)
    if cfg.model.v_parameterization:
        base.noise_scheduler = predicting_v(base.noise_scheduler)
    base.freeze()
    for part in (base.unet, base.vae, base.text_encoder):
        part.to(device)
    return base


def render_tuned_grid(
    tuned: ModelBundle, cfg: TrainConfig, out_dir: Path, device: torch.device
) -> EvalOutcome:
    """A full fine-tune's grid: the base model (weight 0, when eval.weights has it) and the fine-tuned one
    (weight 1); other weights have no meaning for a fine-tuned model and are left out, saying so."""
    tuned.freeze()
    e = cfg.eval
    weights = [0.0, 1.0] if 0 in e.weights else [1.0]
    if dropped := [w for w in e.weights if w not in (0, 1)]:
        log.warning("eval.weights %s left out: a full fine-tune renders the base (0) and itself (1)", dropped)
    models = {0.0: load_eval_base(cfg, device) if 0.0 in weights else None, 1.0: tuned}
    columns = [
        GridColumn("base" if w == 0 else "fine-tuned", models[w], contextlib.nullcontext, f"w{w:g}")
        for w in weights
    ]
    settings = _settings(cfg, Path(tuned.source).name or tuned.source)
    result = render_columns(columns, settings, list(e.prompts), list(e.seeds), out_dir, e.batch_size, "eval")
    scores = score_grid(result, list(e.prompts), list(e.seeds), weights) if e.scorer == "toy" else None
    return EvalOutcome(result.grid_path, scores)


def score_grid(
    result: LoraGridResult, prompts: list[str], seeds: list[int], weights: list[float]
) -> dict[str, dict[str, float | None]]:
    """Per weight of the file: concept presence on trigger prompts, base fidelity on the others (images only)."""
    from data.toy.score import score_images

    row_prompts = [prompt for prompt in prompts for _ in seeds]  # the grid's rows are prompt x seed
    scores = {}
    for col, weight in enumerate(weights):
        images = [Image.open(result.image_paths[row][col]).convert("RGB") for row in range(len(row_prompts))]
        measured = score_images(images, row_prompts)
        scores[str(float(weight))] = {
            "concept_score": measured["concept_score"],
            "base_fidelity": measured["base_fidelity"],
        }
    return scores


def score_metrics(scores: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """Flat metric names for metrics.jsonl and the trackers: `eval/concept_score@1.0`, …"""
    return {
        f"eval/{name}@{weight}": value
        for weight, values in scores.items()
        for name, value in values.items()
        if value is not None
    }
