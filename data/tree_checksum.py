"""A fingerprint of a folder tree, to prove that a stage left the user's source folder untouched."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from data.file_hash import file_sha256


def _file_digest(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as error:
        # Unreadable files still count through their metadata; a permission change shows in the mode.
        return f"unreadable:{error.strerror}"


def _entry_line(path: Path, relative: str) -> str:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        kind, content = "link", os.readlink(path)
    elif stat.S_ISDIR(info.st_mode):
        kind, content = "dir", ""
    elif stat.S_ISREG(info.st_mode):
        kind, content = "file", _file_digest(path)
    else:  # pipes, sockets, devices: never opened, reading one could block
        kind, content = "other", ""
    size = info.st_size if kind != "dir" else 0  # a folder's st_size varies by filesystem; mtime covers it
    return f"{relative}\t{kind}\t{stat.S_IMODE(info.st_mode):o}\t{size}\t{info.st_mtime_ns}\t{content}"


def tree_manifest(root: str | Path) -> list[str]:
    """One line per entry under `root` (itself `.`): path, type, permissions, size, mtime_ns, content.

    Depth first, each folder in name order. Content is the sha256 of a file's bytes, or a link's target. Symlinks are recorded, never followed, so a
    link loop is harmless and files outside `root` are not covered. Any write, rename, delete, chmod or touch
    under `root` changes the manifest; reading (access times) does not.
    """
    root = Path(root)
    lines = [_entry_line(root, ".")]
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            names = sorted(os.listdir(folder))
        except OSError as error:
            lines.append(f"{folder.relative_to(root).as_posix()}/\tunlistable:{error.strerror}")
            continue
        paths = [folder / name for name in names]
        lines.extend(_entry_line(path, path.relative_to(root).as_posix()) for path in paths)
        # Pushed in reverse, so sub-folders are visited in sorted order.
        stack.extend(path for path in reversed(paths) if path.is_dir() and not path.is_symlink())
    return lines


def tree_checksum(root: str | Path) -> str:
    """sha256 hex digest of `tree_manifest(root)`: unchanged unless something under it changed."""
    return hashlib.sha256("\n".join(tree_manifest(root)).encode("utf-8", "surrogateescape")).hexdigest()
