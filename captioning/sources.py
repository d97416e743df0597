"""Where captioning models come from: a local folder or a hub repository id, with errors that say which."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from captioning.base import CaptionerError

T = TypeVar("T")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OFFLINE_HINT = (
    "check the id; without network access (HF_HUB_OFFLINE=1) the files must already be in the hub cache, "
    "or give a local folder instead"
)


def _reason(error: Exception) -> str:
    """The first line of an error: hub and loader errors can run to a page."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def is_repo_id(source: str | Path) -> bool:
    """True for `owner/name` that is not an existing path: it names a hub repository."""
    return not Path(source).exists() and bool(_REPO_ID.match(str(source)))


def check_source(source: str | Path, what: str) -> str:
    """`source` as a string; CaptionerError when it is neither an existing folder nor a hub id."""
    path = Path(source).expanduser()
    if path.is_dir() or is_repo_id(source):
        return str(path) if path.is_dir() else str(source)
    if path.exists():
        raise CaptionerError(f"{what} {path} is a file: give the folder that holds the model files")
    raise CaptionerError(f"{what} {path} does not exist: give a model folder or a hub id like `owner/name`")


def load_pretrained(load: Callable[[str], T], source: str | Path, what: str, needs: str) -> T:
    """Call `load(source)` (a `from_pretrained`); turn its file errors into a CaptionerError.

    needs: the files a model folder must hold, for the message.
    """
    source = check_source(source, what)
    try:
        return load(source)
    except (OSError, ValueError, KeyError) as error:
        if Path(source).is_dir():
            fix = f"the folder must hold {needs}, as save_pretrained writes them"
        else:
            fix = _OFFLINE_HINT
        raise CaptionerError(f"cannot load the {what} from {source}: {_reason(error)}. Fix: {fix}") from None


def model_file(source: str | Path, filename: str, what: str) -> Path:
    """`filename` inside a model folder, or downloaded from hub repo `source` into the cache."""
    source = check_source(source, what)
    path = Path(source)
    if path.is_dir():
        if not (path / filename).is_file():
            raise CaptionerError(
                f"{path / filename} not found: the {what} folder must hold {filename} (download it from "
                f"the model's hub page, or give the hub id instead of the folder)"
            )
        return path / filename
    try:
        return Path(hf_hub_download(source, filename))
    except (OSError, ValueError, EntryNotFoundError) as error:
        raise CaptionerError(
            f"cannot get {filename} of the {what} from hub repository {source}: {_reason(error)}. "
            f"Fix: {_OFFLINE_HINT}"
        ) from None
