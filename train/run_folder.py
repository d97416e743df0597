"""One training run per run folder: a lock, the leftovers of a killed run, an earlier run's LoRA files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from data.atomic import is_temp_name
from data.errors import LoraSmithError, LoraSmithWarning
from data.output_folder import is_inside

LOCK_NAME = ".lock"
SHOWN_FILES = 3  # earlier files named in the message; the rest are counted


class RunFolderError(LoraSmithError):
    """A run folder that another run is using, or that holds the files of an earlier run."""


def check_outside_pictures(run_dir: str | Path, train_dir: str | None, reg_dir: str | None) -> None:
    """A run folder inside the picture folders it reads would be scanned as a concept folder, and its files
    would land among the user's pictures."""
    run_dir = Path(run_dir).absolute()
    for key, folder in (("dataset.train_dir", train_dir), ("dataset.reg_dir", reg_dir)):
        if folder and is_inside(run_dir, Path(folder).expanduser().absolute()):
            raise RunFolderError(
                f"the run folder {run_dir} is inside {key}={folder}: a run would write among the pictures it "
                "reads; choose a hydra.run.dir outside it (and remove what Hydra wrote there: .hydra/ and a .log)"
            )


@contextlib.contextmanager
def lock_run_folder(run_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on `run_dir/.lock` for the block; yields the lock file's path.

    The lock is an flock: the OS releases it when the process dies, however it dies, so a killed run never
    blocks the next one. A second run into the same folder raises RunFolderError naming the holder.
    Take it in one process per launch (the main one): every other process would be refused.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    try:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a folder or an unreadable file in its place
        raise RunFolderError(
            f"cannot open the run folder's lock file {lock} ({error.strerror}): it holds no data, remove it "
            "(or choose another hydra.run.dir)"
        ) from error
    try:
        if _take_lock(handle, run_dir):
            _write_holder(handle)
        try:
            yield lock
        finally:
            # Emptied before release, so a run that reads it between our unlock and its owner's write
            # does not name this finished run.
            os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # releases the lock


def clean_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Remove the temp files (`*.tmp`) and folders (`*.tmp-*`) a killed run left anywhere under `run_dir`.

    Call it only while holding `lock_run_folder`: a live run's temp files look the same. Returns what was
    removed, sorted. Symlinks are removed, never followed.
    """
    removed = []
    for folder, dirs, files in os.walk(run_dir):
        for name in [d for d in dirs if is_temp_name(d)]:
            dirs.remove(name)  # removed whole, not walked into
            removed.append(_remove(Path(folder, name)))
        removed.extend(_remove(Path(folder, name)) for name in files if is_temp_name(name))
    return sorted(removed)


def previous_run_outputs(run_dir: str | Path, name: str) -> list[Path]:
    """The LoRA files and state folders that an earlier run called `name` wrote into `run_dir`.

    `NAME.safetensors`, `NAME-000001.safetensors`, `NAME-step00000100.safetensors`, and the state folders
    `NAME-state`, `NAME-000001-state`, `NAME-step00000100-state`. The final file first, states last.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(name)}(?:-\d+|-step\d+)?(?P<kind>\.safetensors|-state)")
    found = []
    for path in run_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() == (match["kind"] == "-state"):
            found.append(path)
    return sorted(found, key=lambda p: (p.is_dir(), p.name != f"{name}.safetensors", p.name))


def check_fresh_run_folder(run_dir: str | Path, name: str, resuming: bool) -> None:
    """Refuse to start a new run over an earlier run's LoRA files (a new run would overwrite them)."""
    if resuming:
        return
    found = previous_run_outputs(run_dir, name)
    if not found:
        return
    shown = ", ".join(p.name for p in found[:SHOWN_FILES])
    if len(found) > SHOWN_FILES:
        shown += f" and {len(found) - SHOWN_FILES} more"
    raise RunFolderError(
        f"{run_dir} already holds the LoRA files of an earlier run ({shown}): "
        "add resume=auto to continue it, or choose another hydra.run.dir"
    )


def _take_lock(handle: int, run_dir: Path) -> bool:
    """flock `handle` without waiting; False (with a warning) where the filesystem has no locks."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunFolderError(
            f"another training run is using {run_dir} ({_holder(handle)}): "
            "wait for it or pick another hydra.run.dir"
        ) from None
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        warnings.warn(
            f"{run_dir}: this filesystem cannot lock files, so nothing stops a second run from writing "
            "into the same folder",
            LoraSmithWarning,
            stacklevel=3,
        )
        return False
    return True


def _write_holder(handle: int) -> None:
    """Record our pid and start time in the lock file, for the message a second run gets."""
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)


def _holder(handle: int) -> str:
    """`pid N, started at TIME` from the lock file; `pid unknown` while the holder has not written it."""
    lines = os.pread(handle, 256, 0).decode("utf-8", errors="replace").split("\n")
    if len(lines) < 2 or not lines[0].isdigit() or not lines[1]:
        return "pid unknown"
    return f"pid {lines[0]}, started at {lines[1]}"


def _remove(path: Path) -> Path:
    """Remove a file, a symlink or a whole folder; returns `path`."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    return path
