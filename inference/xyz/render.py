"""Render an X/Y/Z plot: every cell as a PNG with its infotext, one labelled grid per Z value, the grid of grids.

Cells render grouped by what the model needs (base model, networks, weight, the prompt's `<lora:…>` tags),
so each group patches the model once, however many cells it has; within a group, cells that can share a
sampling pass are batched (each keeps its own seed's noise).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from inference.components import BaseModel
from inference.controlnet_render import generate_with_units
from inference.controlnet_render import infotext_fields as controlnet_fields
from inference.embeddings import EmbeddingDatabase
from inference.extra_networks import parse_prompt
from inference.hires import generate_hires_batch
from inference.img2img import img2img
from inference.infotext import format_infotext, hires_fields, img2img_fields, save_png
from inference.lora import applied_lora, load_lora_file, lora_file_hash
from inference.lora_grid import lora_tag
from inference.prompt_loras import (
    PromptLora,
    applied_loras,
    lora_hash_entry,
    patching_loras,
    resolve_loras,
)
from inference.txt2img import GenerationParams, generate_batch
from inference.xyz.cell import Cell
from inference.xyz.grids import write_grids
from inference.xyz.plan import MAX_SEED, AxisValues, plan_cells


@dataclass
class XYZCell:
    """One rendered cell: its place, the values that made it, the PNG and the infotext written into it."""

    ix: int
    iy: int
    iz: int
    values: tuple[Any, Any, Any]
    path: Path
    infotext: str
    params: GenerationParams  # as rendered (plain prompt, resolved seeds)


@dataclass
class XYZResult:
    """What a plot wrote: the grid of grids, one grid per Z value, and the cells in A1111's index order."""

    grid_path: Path
    sub_grid_paths: list[Path]
    cells: list[XYZCell]
    axes: tuple[AxisValues, AxisValues, AxisValues]
    seconds: float

    def cell(self, ix: int, iy: int = 0, iz: int = 0) -> XYZCell:
        x, y = len(self.axes[0].values), len(self.axes[1].values)
        return self.cells[ix + iy * x + iz * x * y]

    def table(self) -> list[dict[str, Any]]:
        """One row per cell: its place, the X/Y/Z values, the PNG and its seed (what an evaluation scores)."""
        return [
            {"ix": c.ix, "iy": c.iy, "iz": c.iz, "x": c.values[0], "y": c.values[1], "z": c.values[2],
             "path": str(c.path), "seed": c.params.seed}
            for c in self.cells
        ]  # fmt: skip


ModelLoader = Callable[[str], BaseModel]


@dataclass
class _Prepared:
    """A cell ready to render: the params the engine sees, the LoRAs it needs, its infotext fields."""

    index: int
    cell: Cell
    params: GenerationParams
    loras: list[PromptLora]
    written_prompt: str
    fields: dict[str, Any]

    def group_key(self) -> tuple:
        tags = tuple((lora.name, lora.te_multiplier, lora.unet_multiplier) for lora in self.loras)
        return (*self.cell.patch_key(), tags)


class _Files:
    """The prompt tags' LoRAs and the networks' hashes, read once per plot rather than once per cell."""

    def __init__(self, lora_dir: str | Path | None, model: BaseModel) -> None:
        self.lora_dir = lora_dir
        self.model = model  # the LoRAs that patch none of its layers are dropped
        self._tags: dict[str, list[PromptLora]] = {}
        self._hashes: dict[Path, str] = {}

    def prompt_loras(self, prompt: str, tags: list) -> list[PromptLora]:
        if prompt not in self._tags:
            self._tags[prompt] = patching_loras(self.model, resolve_loras(tags, self.lora_dir))
        return self._tags[prompt]

    def short_hash(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = lora_file_hash(path)[:12]
        return self._hashes[path]


def _prepare(index: int, cell: Cell, files: _Files, model_name: str | None) -> _Prepared:
    params = cell.params
    # With "keep -1 for seeds" each cell draws its own seed here.
    seed = random.randrange(MAX_SEED) if params.seed == -1 else params.seed
    subseed = random.randrange(MAX_SEED) if params.subseed == -1 else params.subseed
    plain, networks = parse_prompt(params.prompt)
    loras = files.prompt_loras(params.prompt, networks.get("lora", []))
    name = Path(cell.checkpoint).stem if cell.checkpoint else model_name
    rendered = replace(params, prompt=plain, seed=seed, subseed=subseed, model_name=name)
    tags = " ".join(lora_tag(path.stem, cell.lora_weight) for path in cell.networks)
    hashes = [lora_hash_entry(lora.name, lora.short_hash) for lora in loras]
    hashes += [lora_hash_entry(path.stem, files.short_hash(path)) for path in cell.networks]
    fields: dict[str, Any] = {"Lora hashes": ", ".join(dict.fromkeys(hashes)) or None}
    if cell.init_image is not None:
        fields.update(img2img_fields(cell.denoising))
    elif cell.hires is not None:
        fields.update(hires_fields(rendered, cell.hires))
    fields.update(controlnet_fields(cell.controlnet, params.height, params.width))
    return _Prepared(index, cell, rendered, loras, f"{params.prompt} {tags}".rstrip(), fields)


def _render_batch(
    model: BaseModel, batch: list[_Prepared], embeddings: EmbeddingDatabase | None, controlnets: dict
) -> list[Image.Image]:
    cell, params = batch[0].cell, [item.params for item in batch]
    init, hires = None, None
    if cell.init_image is not None:
        with Image.open(cell.init_image) as opened:
            init = opened.convert("RGB")
    if cell.hires is not None:
        hires = replace(cell.hires, prompt=parse_prompt(cell.hires.prompt)[0])
    if cell.controlnet:  # each ControlNet loads once into `controlnets`
        return generate_with_units(
            model, params, cell.controlnet, controlnets, embeddings, init_image=init,
            denoising_strength=cell.denoising, hires=hires,
        )  # fmt: skip
    if init is not None:
        return img2img(model, params, init, cell.denoising, embeddings=embeddings)
    if hires is not None:
        return generate_hires_batch(model, params, hires, embeddings)
    return generate_batch(model, params, embeddings)


def _patched(stack: ExitStack, model: BaseModel, cell: Cell, loras: list[PromptLora], cache: dict) -> None:
    """Patch the cell's networks (at its LoRA weight) and its prompt's LoRAs into `model` until `stack` closes."""
    for path in cell.networks:
        if path not in cache:
            cache[path] = load_lora_file(path)
        weight = cell.lora_weight
        stack.enter_context(applied_lora(model, cache[path], weight, weight))
    stack.enter_context(applied_loras(model, loras))


def render_xyz(
    model: BaseModel,
    settings: Cell,
    axes: tuple[AxisValues, AxisValues, AxisValues],
    out_dir: str | Path,
    *,
    draw_legend: bool = True,
    keep_random_seeds: bool = False,
    batch_size: int = 1,
    lora_dir: str | Path | None = None,
    embeddings: EmbeddingDatabase | None = None,
    load_checkpoint: ModelLoader | None = None,
) -> XYZResult:
    """Render every X × Y × Z cell of `settings` with `model` (checkpoint cells with `load_checkpoint`).

    Writes `cells/NNNNN-SEED.png` (N = ix + iy·|X| + iz·|X|·|Y|), `grid-zK.png` per Z value and
    `xyz_grid.png` into `out_dir`, each PNG with A1111's infotext.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    cells, axes = plan_cells(settings, *axes, keep_random_seeds=keep_random_seeds)
    model_name = settings.params.model_name
    files = _Files(lora_dir, model)
    prepared = [_prepare(i, cell, files, model_name) for i, cell in enumerate(cells)]
    results: list[XYZCell | None] = [None] * len(cells)
    images: list[Image.Image | None] = [None] * len(cells)
    with tqdm(total=len(cells), desc="X/Y/Z plot", unit="image") as progress:
        for item, image in _render_groups(prepared, model, load_checkpoint, batch_size, embeddings):
            results[item.index] = _save_cell(item, image, axes, out_dir)
            images[item.index] = image
            progress.update()
    done = [result for result in results if result is not None]
    per_grid = len(axes[0].values) * len(axes[1].values)
    infotexts = [
        _grid_infotext(prepared[start], axes, keep_random_seeds, False)
        for start in range(0, len(cells), per_grid)
    ]
    infotexts.append(_grid_infotext(prepared[0], axes, keep_random_seeds, True))
    grid_path, sub_paths = write_grids(
        [image for image in images if image is not None], axes, out_dir, draw_legend, infotexts
    )
    return XYZResult(grid_path, sub_paths, done, axes, time.perf_counter() - start)


def _render_groups(
    prepared: list[_Prepared],
    model: BaseModel,
    load_checkpoint: ModelLoader | None,
    batch_size: int,
    embeddings: EmbeddingDatabase | None,
) -> Iterator[tuple[_Prepared, Image.Image]]:
    """Each cell with its picture, group by group: a model loads and a patch applies once per group."""
    network_cache: dict[Path, Any] = {}
    controlnets: dict[str, Any] = {}
    loaded: dict[str, BaseModel] = {}  # the one checkpoint in memory
    ordered = sorted(prepared, key=lambda item: (item.group_key(), item.index))
    for _, grouped in itertools.groupby(ordered, key=_Prepared.group_key):
        group = list(grouped)
        cell_model = _model_for(group[0].cell.checkpoint, model, load_checkpoint, loaded)
        with ExitStack() as stack:
            _patched(stack, cell_model, group[0].cell, group[0].loras, network_cache)
            for batch in _batches(group, batch_size):
                yield from zip(batch, _render_batch(cell_model, batch, embeddings, controlnets), strict=True)


def _batches(group: list[_Prepared], batch_size: int) -> Iterator[list[_Prepared]]:
    """The group's cells in sampling passes of up to `batch_size` that share steps, CFG, sampler, …"""

    def key(item: _Prepared) -> str:
        return repr(item.cell.batch_key())

    for _, grouped in itertools.groupby(sorted(group, key=lambda item: (key(item), item.index)), key=key):
        same = list(grouped)
        for first in range(0, len(same), batch_size):
            yield same[first : first + batch_size]


def _model_for(
    checkpoint: str | None, model: BaseModel, load: ModelLoader | None, loaded: dict[str, BaseModel]
) -> BaseModel:
    """The base model, or the checkpoint's (loaded once; the previous one is let go first)."""
    if checkpoint is None:
        return model
    if checkpoint not in loaded:
        if load is None:
            raise ValueError(f"checkpoint {checkpoint} is a model, and no load_checkpoint was given")
        loaded.clear()
        loaded[checkpoint] = load(checkpoint)
    return loaded[checkpoint]


def _save_cell(item: _Prepared, image: Image.Image, axes: tuple, out_dir: Path) -> XYZCell:
    x, y = len(axes[0].values), len(axes[1].values)
    index = item.index
    place = (index % x, (index // x) % y, index // (x * y))
    values = tuple(axis.values[i] for axis, i in zip(axes, place, strict=True))
    infotext = format_infotext(replace(item.params, prompt=item.written_prompt), item.fields)
    path = save_png(image, out_dir / "cells" / f"{index:05d}-{item.params.seed}.png", infotext)
    return XYZCell(*place, values, path, infotext, item.params)


def _grid_infotext(first: _Prepared, axes: tuple, keep_random_seeds: bool, main: bool) -> str:
    """A grid's infotext as A1111 writes it: the first cell's, plus the plot's axes (Z on the main grid)."""
    fields = dict(first.fields)
    fields["Script"] = "X/Y/Z plot"
    for letter, axis in zip("XYZ" if main else "XY", axes, strict=False):
        if axis.axis.key == "nothing":
            continue
        fields[f"{letter} Type"] = axis.axis.label
        fields[f"{letter} Values"] = axis.text
        if axis.axis.is_seed and not keep_random_seeds:
            fields[f"Fixed {letter} Values"] = ", ".join(str(value) for value in axis.values)
    return format_infotext(replace(first.params, prompt=first.written_prompt), fields)
