"""`scripts/build_toy.py --controlnet`: train the toy ControlNet on `models/toy`, judge it, write its folder.

The ControlNet learns silhouettes (`data/toy/control.py`): white shapes on black that say where the shape
goes and which shape it is, while the prompt names only the colours. It is judged on 32 fixed scenes
rendered by the engine with and without it; the folder gets a README with both rates and a grid, and a
checksum list, so a changed model is visible in review.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from data.toy.control import POSITION_TOLERANCE, control_cases
from train.toy_base.controlnet_judge import JUDGE_CFG, JUDGE_SAMPLER, JUDGE_STEPS, judge, judgement_grid
from train.toy_base.controlnet_pool import control_pool
from train.toy_base.controlnet_training import toy_controlnet, train_controlnet
from train.toy_base.export import make_readable, replace_folder, write_checksums

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ControlNetSettings:
    """Everything that decides the toy ControlNet; the same settings give the same model."""

    out: Path = field(default_factory=lambda: REPO / "models" / "toy_controlnet")
    base: Path = field(default_factory=lambda: REPO / "models" / "toy")
    seed: int = 0
    pictures: int = 8000
    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    cases: int = 32


def build_toy_controlnet(settings: ControlNetSettings, load_base: Callable, command: str) -> dict:
    """Train, judge with and without the ControlNet, write `settings.out`; return the report."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = load_base(settings.base)
    start = time.time()
    pool = control_pool(model, settings.pictures, settings.seed)
    torch.manual_seed(settings.seed)  # the hint encoder's initial weights
    controlnet = toy_controlnet(model.unet)
    losses = train_controlnet(
        controlnet, model.unet, model.text_encoder, pool, model.noise_scheduler,
        model.vae.config.scaling_factor, settings.steps, settings.batch, settings.lr, generator,
    )  # fmt: skip
    minutes = round((time.time() - start) / 60, 2)
    cases = control_cases(settings.cases)
    with_control, without = judge(model, controlnet, cases), judge(model, None, cases)
    report = {
        "matches_with_controlnet": round(with_control.rate, 4),
        "matches_without": round(without.rate, 4),
        "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 5),
        "train_minutes": minutes,
    }
    with tempfile.TemporaryDirectory(dir=settings.out.parent) as scratch:
        staging = Path(scratch) / "staging"
        controlnet.save_pretrained(staging)
        judgement_grid(cases, with_control.images, without.images).save(staging / "control_grid.png")
        (staging / "README.md").write_text(_readme(settings, command, report), encoding="utf-8")
        make_readable(staging)
        write_checksums(staging)
        replace_folder(staging, settings.out)
    return report


def _readme(settings: ControlNetSettings, command: str, report: dict) -> str:
    lines = [
        "# models/toy_controlnet — a ControlNet for the toy base model",
        "",
        "A diffusers `ControlNetModel` copied from `models/toy`'s UNet encoder and trained on silhouettes of",
        "base-world shapes (`data/toy/control.py`): white on black, they say where the shape goes and which",
        "shape it is. Prompts name only the colours (`red, blue background`).",
        "",
        f"Built with `{command}`, seed {settings.seed}.",
        "",
        "## Judgement",
        "",
        f"{settings.cases} fixed scenes (`control_cases`), rendered by the engine with {JUDGE_SAMPLER}, {JUDGE_STEPS} steps,",
        f"CFG {JUDGE_CFG}, seed = case number. A case matches when the scorer sees the control's shape class",
        f"with its centre within {POSITION_TOLERANCE:g} px of the control's (at 64 x 64).",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in report.items()],
        "",
        "![control, with the ControlNet, without](control_grid.png)",
        "",
        "## Settings",
        "",
        "```",
        *[f"{k}: {v}" for k, v in asdict(settings).items() if k not in ("out", "base")],
        "```",
        "",
    ]
    return "\n".join(lines)
