"""Judge a toy ControlNet through the engine: fixed scenes rendered with and without it, scored by pixels."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch import nn

from data.toy.control import control_match, control_prompt, silhouette
from data.toy.world import Scene
from inference.components import BaseModel
from inference.controlnet_render import generate_with_units
from inference.controlnet_units import ControlNetUnit
from inference.grid import make_grid
from inference.txt2img import GenerationParams, generate_batch

JUDGE_STEPS = 20
JUDGE_CFG = 5.0
JUDGE_SAMPLER = "Euler"
IN_MEMORY = "toy_controlnet"  # the unit's model name for the ControlNet passed in memory


@dataclass(frozen=True)
class Judgement:
    """The fraction of cases whose picture matched its control, and the pictures in case order."""

    rate: float
    images: list[Image.Image]


def case_params(scene: Scene, seed: int) -> GenerationParams:
    """The render settings of one case: its colours as the prompt, 64 x 64, Euler, fixed steps and CFG."""
    return GenerationParams(
        control_prompt(scene), seed=seed, steps=JUDGE_STEPS, cfg_scale=JUDGE_CFG, width=64, height=64,
        sampler=JUDGE_SAMPLER,
    )  # fmt: skip


def render_case(
    model: BaseModel, controlnet: nn.Module | None, scene: Scene, seed: int, folder: Path
) -> Image.Image:
    """One case's picture; with a ControlNet, its silhouette goes in as a unit at weight 1 (written to `folder`)."""
    params = case_params(scene, seed)
    if controlnet is None:
        return generate_batch(model, [params])[0]
    path = folder / f"control-{seed:03d}.png"
    silhouette(scene).save(path)
    unit = ControlNetUnit(model=IN_MEMORY, image=str(path), module="none", resize_mode="Just Resize")
    return generate_with_units(model, [params], [unit], {IN_MEMORY: controlnet})[0]


def judge(model: BaseModel, controlnet: nn.Module | None, cases: list[Scene]) -> Judgement:
    """Render every case (seed = its index) and score whether its shape and place follow the control."""
    with tempfile.TemporaryDirectory() as scratch:
        images = [
            render_case(model, controlnet, scene, seed, Path(scratch)) for seed, scene in enumerate(cases)
        ]
    hits = [control_match(image, scene).matches for image, scene in zip(images, cases, strict=True)]
    return Judgement(sum(hits) / len(cases), images)


def judgement_grid(
    cases: list[Scene], with_control: list[Image.Image], without: list[Image.Image]
) -> Image.Image:
    """Rows: the control, the picture with the ControlNet, the picture without; one column per case."""
    rows = [[silhouette(scene) for scene in cases], with_control, without]
    return make_grid(rows, ["control", "with ControlNet", "without"], [str(i) for i in range(len(cases))])
