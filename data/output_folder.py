"""The run folder a command line names (`hydra.run.dir=…`), checked before Hydra creates it.

Hydra makes the folder and writes `.hydra/` and its log into it before any of our code runs: a path under a
file, on a read-only disk, or inside the pictures being trained on would otherwise end in a Hydra traceback,
or leave files among the user's pictures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
SOURCE_KEYS = ("dataset.train_dir", "dataset.reg_dir", "source")  # folders a run only reads


def typed_values(argv: list[str]) -> dict[str, str]:
    """`key=value` overrides as typed (Hydra's quotes around a whole value removed)."""
    values = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-"):
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.lstrip("+")] = value
    return values


def is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def folder_problem(key: str, value: str, sources: dict[str, str]) -> str | None:
    """Why Hydra could not create or use the folder `value` (None when it can)."""
    folder = Path(value).expanduser().absolute()
    for source_key, source in sources.items():
        if is_inside(folder, Path(source).expanduser().absolute()):
            return f"{key}={value} is inside {source_key}={source}: a run would write among the pictures it reads"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}={value}: {existing} is a file, not a folder; choose another {key}"
    try:  # what Hydra does next; made here, a failure is one line
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{key}={value}: cannot create it ({error.strerror}); choose another {key}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{key}={value}: cannot write into it (read-only, or not yours); choose another {key}"
    return None


def check_output_folder(argv: list[str], folder_keys: tuple[str, ...] = FOLDER_KEYS) -> None:
    """Exit with one `error:` line (status 2) when the typed run folder cannot be used; HYDRA_FULL_ERROR=1
    leaves it to Hydra. `folder_keys`: the keys that name it (`python -m data` runs in its `out`)."""
    if os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false"):
        return
    values = typed_values(argv)
    sources = {key: values[key] for key in SOURCE_KEYS if values.get(key) not in (None, "", "null")}
    for key in folder_keys:
        if key in values and "${" not in values[key]:  # an interpolation is Hydra's to resolve
            problem = folder_problem(key, values[key], sources)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                sys.exit(2)
