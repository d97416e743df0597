"""Atomic writes: a temp file or folder beside the target, flushed to disk, then renamed into place.

A reader (a webui, a resumed run) sees the old version or the new one, never half of one. Temp names end in
`.tmp` (files) or contain `.tmp-` (folders), which is how `is_temp_name` and train/run_folder.py recognise
what a killed run left behind.

Modes: new files get 0666 less the umask and folders 0755 less the umask, as an ordinary `open()` would.
The mode is passed to open/mkdir and the kernel subtracts the umask itself, so nothing here reads or
changes the umask: no race with other threads (os.umask can only be read by setting it), and a default
ACL on the folder is honoured like for any other new file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from data.errors import LoraSmithError

FILE_MODE = 0o666
DIR_MODE = 0o755
# Out of space, out of quota, or over the process's file size limit (ulimit -f): the user frees space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>
T = TypeVar("T")


class DiskFullError(LoraSmithError):
    """A write that ran out of disk space or quota; the previous file at the target is untouched."""


def is_temp_name(name: str) -> bool:
    """True for the names this module gives its temp files (`*.tmp`) and folders (`*.tmp-*`)."""
    return name.endswith(".tmp") or ".tmp-" in name


def write_bytes_atomic(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Write `data` to `path` so that a kill, a crash or a full disk never leaves a half-written file.

    durable=False skips the fsync (about 0.1 s on some disks): still safe against a killed process, which is
    what the rename guarantees; for many small files, sync once at the end instead.
    Raises DiskFullError (the old file and no temp file left) when the disk or quota is full.
    """
    path = Path(path)
    with _disk_full_is_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same folder, so the rename stays on one filesystem and replaces the old file in one step.
        handle, tmp = _open_temp_file(path.parent, f".{path.name}-")
        try:
            _write_all(handle, data, durable)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    # The folder is not fsynced: after a power cut the target may still be the old file, but never half
    # of one; syncing it would double the cost of each write (~4 ms more here) for callers writing many.
    return path


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8", durable: bool = True) -> Path:
    """`write_bytes_atomic` for text; newlines are written as given (no platform translation)."""
    return write_bytes_atomic(path, text.encode(encoding), durable)


@contextlib.contextmanager
def atomic_directory(final: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; fill it, and on success it replaces `final` whole.

    On an exception the temp folder is removed and an existing `final` stays as it was. On success the files
    are fsynced (unless durable=False), then the folder is moved into place: where Linux allows, the old and
    new folders swap in one step; elsewhere the old one is renamed aside first, leaving a moment without
    `final`. The old folder is removed afterwards. A full disk raises DiskFullError.
    """
    final = Path(final)
    with _disk_full_is_user_error(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_temp_folder(final.parent, final.name + ".tmp-")
        try:
            yield tmp
            if durable:
                _fsync_tree(tmp)
            _move_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if durable:
            _fsync_folder(final.parent)


def disk_full_error(target: Path, error: OSError) -> DiskFullError:
    """The one-line message for a write to `target` that failed with a full disk or quota."""
    reason = error.strerror or str(error)
    return DiskFullError(
        f"cannot write {target}: {reason} ({_free_space(target.parent)}): "
        "free some space and run again (resume=auto continues)"
    )


@contextlib.contextmanager
def _disk_full_is_user_error(target: Path) -> Iterator[None]:
    """Turn an OSError of a full disk into DiskFullError; the caller has already removed its temp files."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        raise disk_full_error(target, error) from error


def _free_space(folder: Path) -> str:
    """`1.2 GiB free there`, measured on the nearest folder that exists."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "free space unknown"
    units, step = ("bytes", "KiB", "MiB", "GiB", "TiB"), 0
    while free >= 1024 and step < len(units) - 1:
        free, step = free / 1024, step + 1
    return f"{free:.0f} bytes free there" if step == 0 else f"{free:.1f} {units[step]} free there"


def _create_fresh(create: Callable[[Path], T], folder: Path, prefix: str, suffix: str = "") -> tuple[T, Path]:
    """Call `create(folder/PREFIX<random>SUFFIX)`, which must fail with FileExistsError on a taken name."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return create(path), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp name", str(folder))


def _open_temp_file(folder: Path, prefix: str) -> tuple[int, Path]:
    """Create `folder/PREFIX<random>.tmp` for writing; returns (fd, path). Mode: 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return _create_fresh(lambda tmp: os.open(tmp, flags, FILE_MODE), folder, prefix, ".tmp")


def _make_temp_folder(folder: Path, prefix: str) -> Path:
    """Create `folder/PREFIX<random>` (PREFIX ends in `.tmp-`). Mode: 0755 less the umask."""
    return _create_fresh(lambda tmp: os.mkdir(tmp, DIR_MODE), folder, prefix)[1]


def _write_all(handle: int, data: bytes, durable: bool) -> None:
    """Write every byte to `handle` (os.write may write less than asked), fsync if durable, close."""
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(handle, view) :]
        if durable:
            os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_folder(folder: Path) -> None:
    """Persist a folder's entries (a rename is only durable once its folder is synced)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not openable as a file on this platform: nothing more we can do
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise
        # Some filesystems refuse fsync on folders (EINVAL); the data itself is synced.
    finally:
        os.close(handle)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (symlinks are not followed)."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            handle = os.open(path, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        _fsync_folder(Path(folder))


def _move_into_place(tmp: Path, final: Path) -> None:
    """Put the folder `tmp` at `final`, replacing whatever is there; the old entry is removed after."""
    if not os.path.lexists(final):
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        old = tmp  # the swap left the previous `final` under the temp name
    else:
        old = final.parent / f"{final.name}.tmp-old-{secrets.token_hex(8)}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)  # a leftover keeps its .tmp- name: the next run cleans it
    else:
        os.unlink(old)


@functools.cache
def _renameat2():
    """libc's renameat2 (glibc >= 2.28), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (RENAME_EXCHANGE); False where the OS or filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    # Any failure (ENOSYS, EINVAL on filesystems without it, ...) falls back to two renames, which
    # report a real problem such as EACCES themselves.
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
