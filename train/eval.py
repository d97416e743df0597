"""After training: render the eval grid (prompts × weights of the saved file) and, for the toy world, score it.

The file loads as its network's format says: a LoRA through the engine's LoRA loader (weight = LoRA
strength), a textual-inversion embedding through its embeddings (weight = the trigger's strength, 0 = off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data.atomic import write_text_atomic
from inference.embedding_grid import render_embedding_grid
from inference.lora_grid import LoraGridResult, render_lora_grid
from train.config import TrainConfig
from train.models.bundle import ModelBundle

# network.file_format → the sweep that loads such a file
GRID_RENDERERS = {"lora": render_lora_grid, "embedding": render_embedding_grid}


@dataclass
class EvalOutcome:
    """The grid and, when a scorer is configured, `scores[weight] = {"concept_score": …, "base_fidelity": …}`."""

    grid_path: Path
    scores: dict[str, dict[str, float | None]] | None = None


def render_eval_grid(
    bundle: ModelBundle, cfg: TrainConfig, path: Path, out_dir: Path, file_format: str = "lora"
) -> EvalOutcome:
    """Render `cfg.eval.prompts` × `cfg.eval.weights` with the saved file (a LoRA or an embedding), then
    score if asked."""
    bundle.freeze()
    e = cfg.eval
    size = cfg.dataset.resolution
    result = GRID_RENDERERS[file_format](
        bundle,
        path,
        prompts=list(e.prompts),
        weights=list(e.weights),
        negative_prompt=e.negative_prompt,
        seeds=list(e.seeds),
        steps=e.steps,
        cfg_scale=e.cfg_scale,
        width=e.width or size,
        height=e.height or size,
        clip_skip=cfg.model.clip_skip,
        out_dir=out_dir,
        model_name=Path(bundle.source).name or bundle.source,
        batch_size=e.batch_size,
        sampler=e.sampler,
        scheduler=e.scheduler,
    )
    scores = (
        score_grid(result, list(e.prompts), list(e.seeds), list(e.weights)) if e.scorer == "toy" else None
    )
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


def write_scores(scores: dict, path: Path) -> Path:
    """`scores.json`: `{"weight": {"1.0": {"concept_score": …, "base_fidelity": …}, …}}`."""
    return write_text_atomic(path, json.dumps({"weight": scores}, indent=2) + "\n")


def score_metrics(scores: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """Flat metric names for metrics.jsonl and the trackers: `eval/concept_score@1.0`, …"""
    return {
        f"eval/{name}@{weight}": value
        for weight, values in scores.items()
        for name, value in values.items()
        if value is not None
    }
