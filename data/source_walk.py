"""Walking the user's picture folder read-only: which entries are files to check, and which links are not followed.

- Symlinks to files are followed. Symlinks to folders are followed only when the target lies outside the
  root, as users link in picture folders kept elsewhere; a link to a folder inside the root is reported,
  not followed, as that folder is walked under its own name (and a link to an ancestor would loop). Each
  real folder (device, inode) is entered once, so loops through outside folders end too. Targets outside
  the root are read, never written. Broken and self-referencing links are reported.
- Hidden entries (names starting with a dot) are not walked, as training ignores them: hidden folders
  silently (.git, .thumbnails), hidden files with a picture extension with a reason.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

Report = Callable[[Path, str], None]  # (path, reason): an entry that is not walked, and why


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _link_problem(path: Path) -> str:
    """Reason for a symlink whose target cannot be reached."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: the link leads back to itself"
        if error.errno == errno.ENOENT:
            return f"broken symbolic link: its target {os.readlink(path)} does not exist"
        return f"symbolic link cannot be followed ({error.strerror})"
    return "symbolic link to something that is neither a file nor a folder"


def _list_folder(folder: Path, report: Report) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        report(folder, f"folder cannot be listed ({error.strerror}): check its permissions")
        return []


def _inside_link(link: Path, root: Path) -> str | None:
    """Why a folder link into the scanned folder is not followed; None if its target lies outside."""
    try:
        target, home = link.resolve(), root.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop, on Python < 3.13
        return f"symbolic link cannot be resolved ({error})"
    if target != home and home not in target.parents:
        return None
    where = "the scanned folder" if target == home else target.relative_to(home).as_posix()
    container = link.parent.resolve()
    # Everything walked lies under the root, so a link to the root itself always closes a loop.
    if target in (home, container) or target in container.parents:
        return f"symbolic link loop: it leads back to {where}, which contains it; not followed"
    return f"link to {where}, inside the scanned folder: scanned there, not twice"


def _enter_once(folder: Path, root: Path, entered: dict[tuple[int, int], Path]) -> str | None:
    """None if `folder` is a real folder not entered yet (now marked entered), else why it is not entered."""
    try:
        info = os.stat(folder)
    except OSError as error:
        return f"folder cannot be opened ({error.strerror})"
    first = entered.get((info.st_dev, info.st_ino))
    if first is None:
        entered[(info.st_dev, info.st_ino)] = folder
        return None
    if first in folder.parents:
        where = "the scanned folder" if first == root else _relative(first, root)
        return f"symbolic link loop: it leads back to {where}, which contains it; not followed"
    return f"same folder as {_relative(first, root)}, which is scanned already"


def _entry_kind(entry: os.DirEntry) -> str:
    """ "dir" or "file" (symlinks followed), "dead link" (broken or looping), else "other"."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError:  # a link loop raises here rather than answering False
        pass
    try:
        return "dead link" if entry.is_symlink() else "other"
    except OSError:
        return "other"


def walk_files(root: Path, report: Report, is_picture_name: Callable[[str], bool]) -> Iterator[Path]:
    """Non-hidden files under `root`, depth first in name order, symlinks followed by the module's rules.

    Loops, broken links, unreadable folders and hidden pictures (`is_picture_name`) go to `report(path,
    reason)`; hidden folders and other hidden files are passed over silently.
    """
    root_stat = os.stat(root)
    entered = {(root_stat.st_dev, root_stat.st_ino): root}
    stack = [iter(_list_folder(root, report))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path = Path(entry.path)
        kind = _entry_kind(entry)
        if entry.name.startswith("."):
            if is_picture_name(entry.name) and kind != "dir":
                what = "macOS metadata file (._ prefix)" if entry.name.startswith("._") else "hidden file"
                report(path, f"{what}: names starting with a dot are ignored, as in training")
        elif kind == "dir":
            reason = _inside_link(path, root) if entry.is_symlink() else None
            reason = reason or _enter_once(path, root, entered)
            if reason:
                report(path, reason)
            else:
                stack.append(iter(_list_folder(path, report)))
        elif kind == "dead link":
            report(path, _link_problem(path))
        else:
            yield path
