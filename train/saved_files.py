"""The LoRA files a run folder holds, with the step and epoch each was saved at (read from its header)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from data.errors import LoraSmithError


@dataclass(frozen=True)
class SavedFile:
    """One saved file: `NAME-000004.safetensors` (epoch), `NAME-step00000300.safetensors` or `NAME.safetensors`."""

    path: Path
    step: int | None  # optimizer steps trained when it was written (ss_steps)
    epoch: int | None  # ss_epoch
    final: bool


def _header_number(metadata: dict[str, str], key: str) -> int | None:
    value = metadata.get(key)
    return int(value) if value is not None and value.isdigit() else None


def read_saved_file(path: Path, final: bool) -> SavedFile:
    """The file with its step and epoch; LoraSmithError naming it when it is not a readable safetensors."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise LoraSmithError(
            f"{path} cannot be read as a safetensors file ({error}): delete or replace it"
        ) from error
    return SavedFile(path, _header_number(metadata, "ss_steps"), _header_number(metadata, "ss_epoch"), final)


def saved_files(run_dir: Path, name: str) -> list[SavedFile]:
    """The run's epoch and step files in step order, then its final file (those present)."""
    pattern = re.compile(rf"^{re.escape(name)}(-\d{{6}}|-step\d{{8}})?\.safetensors$")
    found = [
        read_saved_file(path, final=path.name == f"{name}.safetensors")
        for path in sorted(run_dir.glob(f"{name}*.safetensors"))
        if pattern.match(path.name)
    ]
    return sorted(found, key=lambda f: (f.final, f.step if f.step is not None else -1, f.path.name))


def check_run_folder(run_dir: Path) -> Path:
    """The run folder's config.yaml; LoraSmithError when `run_dir` is not a folder that training wrote."""
    if not run_dir.is_dir():
        raise LoraSmithError(
            f"run={run_dir} is not a folder: give the run folder that `python -m train` wrote"
        )
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LoraSmithError(f"run={run_dir} has no config.yaml: give a folder that `python -m train` wrote")
    return path
