"""How well a toy base model renders the base world: a fixed prompt set, fixed seeds, the analytic scorer."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from data.toy.score import score_images
from data.toy.world import base_prompt_scenes, caption
from inference.grid import make_grid
from inference.txt2img import txt2img

FIDELITY_STEPS = 20
FIDELITY_CFG = 5.0


def fidelity_prompts(count: int = 32) -> list[str]:
    """The fixed base-world prompts (tag captions of `base_prompt_scenes`)."""
    return [caption(scene) for scene in base_prompt_scenes(count)]


def render_prompts(
    model, prompts: list[str], seeds: list[int], desc: str = "rendering"
) -> list[list[Image.Image]]:
    """images[prompt][seed], Euler, fixed steps and guidance."""
    rows = []
    for prompt in tqdm(prompts, desc=desc, leave=False):
        rows.append(
            [
                txt2img(
                    model,
                    prompt,
                    seed=seed,
                    steps=FIDELITY_STEPS,
                    cfg_scale=FIDELITY_CFG,
                    width=64,
                    height=64,
                )
                for seed in seeds
            ]
        )
    return rows


def base_fidelity(model, prompts: list[str], seeds: list[int]) -> tuple[float, list[list[Image.Image]]]:
    """Mean base_fidelity over prompts x seeds, and the rendered images."""
    rows = render_prompts(model, prompts, seeds, desc="base fidelity")
    images = [image for row in rows for image in row]
    repeated = [prompt for prompt in prompts for _ in seeds]
    return float(score_images(images, repeated)["base_fidelity"]), rows


def save_fidelity_grid(
    rows: list[list[Image.Image]], prompts: list[str], seeds: list[int], path: Path
) -> Path:
    """A prompts x seeds grid with labels, as PNG."""
    grid = make_grid(rows, prompts, [f"seed {s}" for s in seeds])
    grid.save(path)
    return path
