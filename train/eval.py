"""After training: render the eval grid (prompts × LoRA weights) through the bundled inference engine."""

from __future__ import annotations

from pathlib import Path

from inference.lora_grid import render_lora_grid
from train.config import TrainConfig
from train.models.bundle import ModelBundle


def render_eval_grid(bundle: ModelBundle, cfg: TrainConfig, lora_path: Path, out_dir: Path) -> Path:
    """Render `cfg.eval.prompts` × `cfg.eval.weights` with the saved LoRA file; return the grid's path."""
    bundle.freeze()
    e = cfg.eval
    size = cfg.dataset.resolution
    result = render_lora_grid(
        bundle,
        lora_path,
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
    )
    return result.grid_path
