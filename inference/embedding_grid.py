"""An embedding strength sweep: prompts x seeds (rows) at each strength of a textual-inversion file (columns).

The file loads as A1111 loads it from `embeddings/`: its trigger is the file name. Strength 0 renders
without the embedding (the trigger read as plain words, as the base model reads it), strength 1 the prompt
as written, any other strength the trigger under A1111's emphasis, `(trigger:0.5)`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from inference.components import BaseModel
from inference.embeddings import EmbeddingDatabase, load_embedding
from inference.grid import make_grid
from inference.infotext import format_infotext, format_number, save_png
from inference.lora_grid import LoraGridResult, row_labels
from inference.ti_hashes import ti_hashes
from inference.txt2img import GenerationParams, generate_batch


def with_strength(prompt: str, trigger: str, strength: float) -> str:
    """`prompt` with each standalone `trigger` emphasised as `(trigger:strength)`; unchanged at strength 1."""
    if strength == 1:
        return prompt
    pattern = rf"(?<![\w]){re.escape(trigger)}(?![\w])"
    return re.sub(pattern, lambda m: f"({m.group(0)}:{format_number(strength)})", prompt, flags=re.IGNORECASE)


def render_embedding_grid(
    model: BaseModel,
    embedding_path: str | Path,
    prompts: list[str],
    weights: list[float],
    negative_prompt: str,
    seeds: list[int],
    steps: int,
    cfg_scale: float,
    width: int,
    height: int,
    clip_skip: int,
    out_dir: str | Path,
    model_name: str,
    batch_size: int = 8,
    sampler: str = "Euler",
    scheduler: str = "Automatic",
) -> LoraGridResult:
    """Render prompts x seeds (rows) at each embedding strength (columns); write each PNG and `grid.png`."""
    if not prompts or not weights or not seeds:
        raise ValueError("an embedding grid needs at least one prompt, one weight and one seed")
    embedding = load_embedding(embedding_path)
    database = EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
    database.add(embedding)
    out_dir = Path(out_dir)
    settings = GenerationParams(
        "", negative_prompt, 0, steps, cfg_scale, width, height, clip_skip, sampler, model_name,
        scheduler=scheduler,
    )  # fmt: skip
    rows = list(enumerate((prompt, seed) for prompt in prompts for seed in seeds))
    cells: list[list[Image.Image | None]] = [[None] * len(weights) for _ in rows]
    paths: list[list[Path | None]] = [[None] * len(weights) for _ in rows]
    infotexts: list[str] = []
    with tqdm(total=len(rows) * len(weights), desc=f"embedding grid {embedding.name}", unit="image") as bar:
        for col, weight in enumerate(weights):
            used = database if weight else None
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                batch = [
                    replace(settings, prompt=with_strength(prompt, embedding.name, float(weight)), seed=seed)
                    for _, (prompt, seed) in chunk
                ]
                images = generate_batch(model, batch, used)
                for (row, (_, seed)), params, image in zip(chunk, batch, images, strict=True):
                    hashes = ti_hashes(model.tokenizer, params.prompt, negative_prompt, used, steps)
                    infotext = format_infotext(params, {"TI hashes": hashes})
                    name = f"{row:03d}-{col:02d}-seed{seed}-w{format_number(float(weight))}.png"
                    paths[row][col] = save_png(image, out_dir / name, infotext)
                    cells[row][col] = image
                    infotexts.append(infotext)
                bar.update(len(chunk))
    labels = [f"{embedding.name} {format_number(float(w))}" for w in weights]
    grid = make_grid(cells, row_labels(prompts, seeds), labels)
    return LoraGridResult(save_png(grid, out_dir / "grid.png", infotexts[0]), paths)
