"""Every picture of the dataset decoded once before the first step, so a broken or absurd file is named now
instead of crashing the run when a batch first draws it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from data.errors import DatasetError
from data.images import shown_size
from data.scan import strict_truncation

log = logging.getLogger(__name__)

# Pillow's decoders release the GIL, so two threads overlap two decodes and their file reads. Not measured to
# help on a machine with one free core (320 pictures: 2.55 s vs 2.69 s with one thread, within noise); more
# threads would only contend with the rest of the trainer starting up.
THREADS = 2
# JPEGs are decoded at up to 1/8 scale (DCT scaling), no smaller than this on either side: every byte is
# still read and entropy-decoded, so truncation and corrupt data are still caught, in about half the time
# (120 JPEGs of 1600×1200: 0.40 s instead of 0.73 s).
_DRAFT_SIDE = 64
_MOVE_OUT = "re-save it as PNG or JPEG, or move it out of the dataset folder"


def _describe(error: Exception) -> str:
    """What a decoding failure means for the user, and the fix: '<what>: <fix>'."""
    if isinstance(error, Image.DecompressionBombError):
        return f"has more pixels than Pillow's decompression-bomb guard allows ({error}): downscale it"
    if isinstance(error, UnidentifiedImageError):
        return f"is not a picture format Pillow can read: {_MOVE_OUT}"
    if isinstance(error, FileNotFoundError):
        return "was deleted or moved after the dataset folder was read: put it back, or start again"
    if isinstance(error, PermissionError):
        return "cannot be read (permission denied): check its permissions"
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return f"is truncated (the file ends early): copy it again from the original, or {_MOVE_OUT}"
    return f"cannot be decoded ({type(error).__name__}: {error}): {_MOVE_OUT}"


def _shape_problem(size: tuple[int, int], max_aspect_ratio: float) -> str | None:
    """The complaint about a picture whose longer side exceeds max_aspect_ratio × its shorter side, else None."""
    width, height = size
    longer, shorter = max(width, height), min(width, height)
    if longer <= max_aspect_ratio * shorter:
        return None
    return (
        f"is {width}×{height} px: its longer side is {longer / max(shorter, 1):.1f} times its shorter side, "
        f"more than dataset.max_aspect_ratio={max_aspect_ratio:g}; crop it nearer to square, or raise "
        "dataset.max_aspect_ratio"
    )


def _note_very_large(path: Path, size: tuple[int, int]) -> None:
    """One line for a picture above Pillow's decompression-bomb warning size (about 89 MP): it trains, but is
    decoded whole and downscaled every time a batch draws it."""
    width, height = size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        log.warning(
            "%s is very large (%d×%d px): it is decoded whole each time it is drawn; downscaling it once "
            "(python -m data does) makes every epoch faster",
            Path(path).absolute(), width, height,
        )  # fmt: skip


def picture_problem(path: Path, max_aspect_ratio: float) -> str | None:
    """What is wrong with one picture ('<what>: <fix>'), or None when it fully decodes and has a sane shape.

    Call it under LOAD_TRUNCATED_IMAGES=False (check_pictures does), or truncation goes unnoticed.
    """
    try:
        with Image.open(path) as image:
            problem = _shape_problem(shown_size(image), max_aspect_ratio)
            if problem:
                return problem
            _note_very_large(path, image.size)
            if image.format == "JPEG":
                image.draft(None, (_DRAFT_SIDE, _DRAFT_SIDE))
            image.load()  # the header alone says nothing about a file cut short: decode every byte
    except Exception as error:  # Pillow raises many types on hostile input; each is a finding, not a crash
        return _describe(error)
    return None


def check_pictures(
    paths: Sequence[Path], max_aspect_ratio: float, progress: bool = True, threads: int = THREADS
) -> None:
    """Decode every picture once; one DatasetError naming the first bad file (and how many more) if any is.

    The others are logged one per line first, so one run lists everything to fix.
    """
    # Pillow warns of a "decompression bomb" for pictures above MAX_IMAGE_PIXELS, without naming the file,
    # each time one is opened; it is named once here instead (_note_very_large), and then left in peace.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    with strict_truncation(), ThreadPoolExecutor(max_workers=threads) as pool:
        found = pool.map(lambda path: picture_problem(path, max_aspect_ratio), paths)
        bar = tqdm(found, total=len(paths), desc="checking pictures", unit="picture", disable=not progress)
        problems = [(path, why) for path, why in zip(paths, bar, strict=True) if why]
    if not problems:
        return
    for path, why in problems[1:]:
        log.warning("%s %s", Path(path).absolute(), why)
    first, why = problems[0]
    more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
    raise DatasetError(f"{Path(first).absolute()} {why}{more}")
