"""Caption files next to images, their tags and tag counts (training's caption options: train/caption_ops.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from data.errors import DatasetError


def caption_path(image: Path, extensions: list[str]) -> Path | None:
    """The first existing `<stem><ext>` next to `image`, or None; extensions may omit the dot."""
    for ext in extensions:
        dotted = ext if ext.startswith(".") else "." + ext
        # with_name, not with_suffix: `img.v2.png` must find `img.v2.txt`.
        candidate = image.with_name(image.stem + dotted)
        if candidate.is_file():
            return candidate
    return None


def read_caption(image: Path, extensions: list[str], every_line: bool = False) -> str | None:
    """The caption of `image`: the first non-empty line of its caption file, stripped (all of them, one per
    line, with `every_line`: wildcard captions pick one per sample); None if absent or empty."""
    path = caption_path(Path(image), extensions)
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path} cannot be read ({error.strerror}): check its permissions") from None
    try:
        # utf-8-sig drops the byte-order mark that Windows Notepad writes.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path} is not UTF-8 text (bad byte at position {error.start}): open it in an editor and save "
            f"it with UTF-8 encoding"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return "\n".join(lines) if every_line else lines[0]


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def tag_frequency(captions: Iterable[str]) -> dict[str, int]:
    """How often each comma-separated tag occurs over `captions`, most frequent first."""
    counts = Counter(tag for caption in captions for tag in split_tags(caption))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
