"""A LoRA strength sweep: every prompt and seed (rows) at every LoRA weight (columns), saved as PNGs and a grid.

`render_columns` draws any such grid whose columns are models (a base and its fine-tune, for instance).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from inference.components import BaseModel
from inference.embeddings import EmbeddingDatabase
from inference.grid import make_grid
from inference.infotext import format_infotext, format_number, save_png
from inference.lora import applied_lora, load_lora_file, lora_file_hash
from inference.prompt_loras import lora_hash_entry
from inference.txt2img import GenerationParams, generate_batch


@dataclass
class LoraGridResult:
    """Where the sweep was written: `image_paths[row][column]` matches the grid's cells."""

    grid_path: Path
    image_paths: list[list[Path]]


def lora_tag(name: str, weight: float) -> str:
    """The extra-network tag A1111 shows for a LoRA at `weight`, e.g. `<lora:style:0.5>`."""
    return f"<lora:{name}:{format_number(float(weight))}>"


def row_labels(prompts: list[str], seeds: list[int]) -> list[str]:
    if len(seeds) == 1:
        return list(prompts)
    return [f"{prompt}\nseed {seed}" for prompt in prompts for seed in seeds]


@dataclass
class GridColumn:
    """One column of a grid: the model it renders with, and how its pictures are labelled."""

    label: str  # the grid's column header, e.g. "lora 0.5"
    model: BaseModel
    applied: Callable[[], AbstractContextManager]  # patches the model while the column renders
    file_tag: str  # in the PNG names, e.g. "w0.5"
    prompt_tag: str = ""  # appended to the infotext's prompt, e.g. "<lora:style:0.5>"
    infotext: dict = field(default_factory=dict)  # extra infotext fields, e.g. "Lora hashes"
    prompt_for: Callable[[str], str] = str  # the prompt the text encoder reads (an embedding's strength)
    embeddings: EmbeddingDatabase | None = None  # textual-inversion embeddings the prompts may use
    fields_for: Callable[[GenerationParams], dict] | None = None  # per-image infotext fields ("TI hashes")


def render_columns(
    columns: list[GridColumn],
    settings: GenerationParams,
    prompts: list[str],
    seeds: list[int],
    out_dir: str | Path,
    batch_size: int = 8,
    desc: str = "grid",
) -> LoraGridResult:
    """Render prompts x seeds (rows) in every column with `settings`; write each PNG and `grid.png`."""
    if not prompts or not columns or not seeds:
        raise ValueError("a grid needs at least one prompt, one column and one seed")
    out_dir = Path(out_dir)
    rows = list(enumerate((prompt, seed) for prompt in prompts for seed in seeds))
    cells: list[list[Image.Image | None]] = [[None] * len(columns) for _ in rows]
    paths: list[list[Path | None]] = [[None] * len(columns) for _ in rows]
    infotexts: list[str] = []
    with tqdm(total=len(rows) * len(columns), desc=desc, unit="image") as progress:
        # Columns outermost: each column patches the model once for all its cells.
        for col, column in enumerate(columns):
            with column.applied():
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    # The text encoder sees the plain prompt; the tag goes only into the infotext, as A1111
                    # writes it.
                    plain = [
                        replace(settings, prompt=column.prompt_for(prompt), seed=seed)
                        for _, (prompt, seed) in chunk
                    ]
                    images = generate_batch(column.model, plain, column.embeddings)
                    for (row, (_, seed)), plain_params, image in zip(chunk, plain, images, strict=True):
                        tagged = replace(
                            plain_params, prompt=f"{plain_params.prompt} {column.prompt_tag}".rstrip()
                        )
                        fields = column.fields_for(plain_params) if column.fields_for else column.infotext
                        infotext = format_infotext(tagged, fields)
                        name = f"{row:03d}-{col:02d}-seed{seed}-{column.file_tag}.png"
                        paths[row][col] = save_png(image, out_dir / name, infotext)
                        cells[row][col] = image
                        infotexts.append(infotext)
                    progress.update(len(chunk))
    grid = make_grid(cells, row_labels(prompts, seeds), [column.label for column in columns])
    grid_path = save_png(grid, out_dir / "grid.png", infotexts[0])
    return LoraGridResult(grid_path, paths)


def lora_columns(model: BaseModel, lora_path: str | Path, weights: list[float]) -> list[GridColumn]:
    """One grid column per weight of the LoRA file, each patching it in while it renders."""
    lora = load_lora_file(lora_path)
    hash_entry = {"Lora hashes": lora_hash_entry(lora.name, lora_file_hash(lora_path)[:12])}
    return [
        GridColumn(
            f"lora {format_number(float(w))}",
            model,
            functools.partial(applied_lora, model, lora, w, w),
            f"w{format_number(float(w))}",
            lora_tag(lora.name, w),
            hash_entry,
        )  # fmt: skip
        for w in weights
    ]


def render_lora_grid(
    model: BaseModel,
    lora_path: str | Path,
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
    """Render prompts x seeds (rows) at each LoRA weight (columns); write each PNG and `grid.png` to out_dir.

    `batch_size` images share one sampling pass; each keeps its own seed's noise, so the pictures do not
    depend on it beyond float rounding. `sampler` / `scheduler`: any A1111 sampler name and schedule type.
    """
    if not prompts or not weights or not seeds:
        raise ValueError("a LoRA grid needs at least one prompt, one weight and one seed")
    settings = GenerationParams(
        "", negative_prompt, 0, steps, cfg_scale, width, height, clip_skip, sampler, model_name,
        scheduler=scheduler,
    )  # fmt: skip
    columns = lora_columns(model, lora_path, weights)
    return render_columns(
        columns, settings, prompts, seeds, out_dir, batch_size, f"LoRA grid {Path(lora_path).stem}"
    )
