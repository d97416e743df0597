"""What a run folder holds, found by looking: the report and the trackers show whatever of it exists.

A run that stopped early, a run from before samples existed, or a folder a standalone evaluation added
grids to all read the same way; nothing here requires a file to be there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

# Folders whose pictures are not results: wandb's copies, the toy dataset, resume states, temp files.
SKIPPED_PARTS = ("wandb", "dataset", ".hydra")


@dataclass
class RunContents:
    """The pieces of one run folder, paths absolute; `metrics` is metrics.jsonl's rows in order."""

    run_dir: Path
    name: str
    config_text: str | None = None
    metrics: list[dict] = field(default_factory=list)
    lora_files: list[Path] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    scores: dict[Path, dict] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """The final `NAME.safetensors` is written last: its presence marks a run that completed."""
        return (self.run_dir / f"{self.name}.safetensors").is_file()


def read_run(run_dir: Path) -> RunContents:
    """Everything the report shows, from `run_dir`; missing pieces stay empty."""
    config = run_dir / "config.yaml"
    config_text = config.read_text(encoding="utf-8") if config.is_file() else None
    name = run_name(config_text) or run_dir.name
    return RunContents(
        run_dir=run_dir,
        name=name,
        config_text=config_text,
        metrics=read_metrics(run_dir / "metrics.jsonl"),
        lora_files=lora_files(run_dir, name),
        samples=result_files(run_dir, "samples/**/*.png", skip_grids=True),
        grids=result_files(run_dir, "**/*grid*.png"),
        scores=read_scores(result_files(run_dir, "**/scores*.json")),
    )


def run_name(config_text: str | None) -> str | None:
    """The run's `name` from config.yaml (None when there is no config or it cannot be read)."""
    if not config_text:
        return None
    from omegaconf import OmegaConf

    try:
        name = OmegaConf.create(config_text).get("name")
    except Exception:  # a hand-edited or truncated file: the folder's name will do
        return None
    return str(name) if name else None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a line cut short by a kill is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def lora_files(run_dir: Path, name: str) -> list[Path]:
    """The `.safetensors` files at the top of the folder: the final one first, then by name."""
    files = [p for p in run_dir.glob("*.safetensors") if p.is_file()]
    return sorted(files, key=lambda p: (p.name != f"{name}.safetensors", p.name))


def result_files(run_dir: Path, pattern: str, skip_grids: bool = False) -> list[Path]:
    """Files matching `pattern`, outside wandb's copies, the dataset, states and temp files, by path."""
    found = []
    for path in run_dir.glob(pattern):
        parts = path.relative_to(run_dir).parts
        if any(p in SKIPPED_PARTS or p.endswith("-state") or ".tmp" in p for p in parts):
            continue
        if skip_grids and "grid" in path.name:
            continue
        if path.is_file():
            found.append(path)
    return sorted(found)


def read_scores(paths: list[Path]) -> dict[Path, dict]:
    """`{path: {"1.0": {"concept_score": …}, …}}` for each scores file in the `{"weight": …}` layout."""
    scores = {}
    for path in paths:
        try:
            weights = json.loads(path.read_text(encoding="utf-8")).get("weight")
        except (ValueError, AttributeError):
            continue
        if isinstance(weights, dict):
            scores[path] = weights
    return scores


def score_table(scores: dict[str, dict]) -> tuple[list[str], list[list]]:
    """`{"1.0": {"concept_score": 0.9}}` → columns `["weight", "concept_score"]`, rows `[[1.0, 0.9]]`."""
    names: list[str] = []
    for values in scores.values():
        names += [name for name in values if name not in names]
    rows = []
    for weight, values in scores.items():
        rows.append([_number(weight)] + [values.get(name) for name in names])
    return ["weight", *names], rows


def png_caption(path: Path) -> str:
    """A picture's prompt (the first line of its infotext), or its file name when it has none."""
    try:
        with Image.open(path) as image:
            text = image.info.get("parameters")
    except OSError:
        text = None
    return text.split("\n", 1)[0] if text else path.name


def _number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text
