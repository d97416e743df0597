"""Read-only scan of the user's picture folder: every file checked, every skip explained, nothing written.

Decisions, so later stages and the report can rely on them:
- Folders are walked by `data.source_walk` (its docstring says which symlinks are followed). Hidden
  pictures are reported, hidden folders passed over.
- Animated or multi-page files (GIF, WebP, APNG, TIFF, MPO) are kept: the first frame is used and `notes`
  says so.
- A caption that cannot be read (not UTF-8, permissions) counts as missing; `caption_error` says why.
  Nothing guesses another encoding: latin-1 and cp1252 disagree, and a silent guess trains on mojibake.
- Only files with a picture extension are checked or reported; caption files without a picture are
  listed as orphans; everything else (.json, .psd, notes) is ignored.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from data.captions import caption_path, read_caption
from data.dedupe import dhash, thumbnail
from data.errors import DatasetError, LoraSmithError
from data.images import WHITE, has_alpha, shown_size, to_rgb
from data.source_walk import walk_files

Size = tuple[int, int]
Color = tuple[int, int, int]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Claimed pictures that this Pillow may lack a decoder for: reported with a conversion hint, not ignored.
_PLUGIN_SUFFIXES = (".heic", ".heif", ".avif", ".jxl")
CAPTION_SUFFIXES = (".txt", ".caption")
# JPEGs are decoded at 1/2–1/8 scale during the scan (every byte is still decoded, so truncation and
# corruption are still caught), no smaller than this on either side; plenty for a 9×8 hash.
_DRAFT_SIDE = 64


@dataclass
class SourceImage:
    """A picture that decoded fully; pixels are not kept, `load_source_image` reads them again."""

    path: Path  # as walked under the root, possibly through a symlink
    relative: Path  # path relative to the scanned root
    sha256: str  # of the file bytes
    size: Size  # (w, h) in pixels after EXIF orientation
    mode: str  # PIL mode in the file, before conversion to RGB: "P", "CMYK", "I;16", ...
    format: str  # PIL format: "PNG", "JPEG", ...
    dhash: int  # 64-bit difference hash of the upright RGB picture, for near-duplicate search
    thumbnail: bytes  # 8×8 RGB of the upright picture (192 bytes): near duplicates must agree in colour
    caption: str | None = None  # first non-empty line of the caption file; None if absent or unreadable
    caption_path: Path | None = None
    caption_error: str | None = None  # why the caption file could not be read
    notes: list[str] = field(default_factory=list)  # kept, but worth telling: animation, transparency, ...


@dataclass
class Skipped:
    """A file that is not used, and why."""

    path: Path
    reason: str


@dataclass
class ScanResult:
    """What `scan_source` found: usable pictures, skipped files, captions without a picture."""

    root: Path
    images: list[SourceImage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)


class _Skip(Exception):
    """Internal: this file is not usable; the message is the reason."""


@contextmanager
def strict_truncation() -> Iterator[None]:
    """Pillow refuses truncated files inside this block, whatever a library switched on at import (then a
    truncated file would load as grey instead of failing)."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _is_picture_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_SUFFIXES or suffix in _PLUGIN_SUFFIXES


def _read_file(path: Path) -> bytes:
    """The bytes of a regular, non-empty file; _Skip otherwise."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise _Skip("not a regular file (a pipe, socket or device): not read")
        if info.st_size == 0:
            raise _Skip("0-byte file: it is empty; copy it again from the original")
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        fix = ": check its permissions" if isinstance(error, PermissionError) else ""
        raise _Skip(f"cannot be read ({error.strerror}){fix}") from None


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    return not head.translate(None, bytes(range(32, 127)) + b"\t\n\r\x0c")


def _failure(error: Exception, data: bytes, suffix: str) -> str:
    """A short reason for a file that Pillow could not open or decode."""
    if isinstance(error, Image.DecompressionBombError):
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return f"decompression bomb guard: more than {limit:,} pixels; downscale it if it is a real picture"
    if isinstance(error, UnidentifiedImageError):
        if suffix.lower() in _PLUGIN_SUFFIXES:
            return f"{suffix} pictures cannot be decoded here: convert it to PNG or JPEG"
        if _looks_like_text(data):
            return "not an image: the file holds text (a renamed text file or a saved web page?)"
        return "not an image: its bytes are in no picture format we read; re-save it as PNG or JPEG"
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return "truncated image data: the file ends early; re-save it or copy it again from the original"
    if isinstance(error, MemoryError):
        return "too large to decode in memory: downscale it"
    return f"broken image data ({type(error).__name__}: {error}): re-save it as PNG or JPEG"


def _to_rgb(image: Image.Image, background: Color, notes: list[str]) -> Image.Image:
    """`data.images.to_rgb` onto `background`, with a note when the picture really has transparent pixels."""
    if has_alpha(image) and image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        notes.append(f"transparent pixels composited on the background colour {background}")
    return to_rgb(image, background)


def _upright_rgb(opened: Image.Image, background: Color, notes: list[str]) -> Image.Image:
    """Decode every byte of the first frame, apply the EXIF orientation, convert to RGB."""
    opened.load()
    return _to_rgb(ImageOps.exif_transpose(opened), background, notes)


def _frame_note(image: Image.Image) -> list[str]:
    frames = getattr(image, "n_frames", 1)
    return [f"{image.format} with {frames} frames: only the first is used"] if frames > 1 else []


def _warning_notes(caught: list[warnings.WarningMessage], size: Size) -> list[str]:
    """Pillow's warnings (corrupt EXIF, very large picture) as notes, instead of console noise."""
    notes = []
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            notes.append(f"very large ({size[0]}×{size[1]} px): check that it is a real picture")
        elif not issubclass(warning.category, DeprecationWarning):
            notes.append(f"decoder warning: {warning.message}")
    return list(dict.fromkeys(notes))


def _inspect(path: Path, root: Path, min_size: int, background: Color) -> SourceImage:
    """Read and fully decode one picture; _Skip with the reason if it is not usable."""
    data = _read_file(path)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                size = shown_size(opened)
                if min(size) < min_size:
                    raise _Skip(f"too small: {size[0]}×{size[1]} px, the shorter side is under {min_size} px")
                mode, format_ = opened.mode, opened.format or "unknown"
                notes += _frame_note(opened)
                if format_ == "JPEG":
                    opened.draft(None, (_DRAFT_SIDE, _DRAFT_SIDE))
                rgb = _upright_rgb(opened, background, notes)
                hash_, thumb = dhash(rgb), thumbnail(rgb)
        except _Skip:
            raise
        except Exception as error:  # Pillow raises many types on hostile input; none may stop the scan
            raise _Skip(_failure(error, data, path.suffix)) from None
    return SourceImage(
        path=path,
        relative=path.relative_to(root),
        sha256=hashlib.sha256(data).hexdigest(),
        size=size,
        mode=mode,
        format=format_,
        dhash=hash_,
        thumbnail=thumb,
        notes=notes + _warning_notes(caught, size),
    )


def _attach_caption(image: SourceImage) -> None:
    try:
        image.caption_path = caption_path(image.path, list(CAPTION_SUFFIXES))
        if image.caption_path is not None:
            image.caption = read_caption(image.path, list(CAPTION_SUFFIXES))
    except OSError as error:  # a caption that cannot even be looked at
        image.caption_error = f"caption cannot be checked ({error.strerror}): check the folder's permissions"
    except DatasetError as error:
        # Name the caption by its file name: the report prints it next to the picture's path.
        image.caption_error = str(error).replace(str(image.caption_path), image.caption_path.name, 1)


def _check_arguments(root: Path, min_size: int, background: Color) -> None:
    if len(background) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in background):
        raise LoraSmithError(f"background {background} must be three values 0–255, e.g. (255, 255, 255)")
    if min_size < 1:
        raise LoraSmithError(f"min_size {min_size} must be at least 1 pixel")
    if not root.exists():
        raise DatasetError(f"source folder {root} does not exist: check the path")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder: point at the folder that holds the pictures")


def scan_source(root: str | Path, min_size: int = 64, background: Color = WHITE) -> ScanResult:
    """Check every picture under `root` (recursively, name order) without writing anything there.

    Pictures are decoded fully, upright, as RGB with transparency on `background`; ones whose shorter side is
    under `min_size` px are skipped. See the module docstring for symlinks, animations and captions.
    """
    root = Path(root).expanduser()
    background = tuple(background)
    _check_arguments(root, min_size, background)
    result = ScanResult(root=root)
    captions: list[Path] = []
    picture_stems: set[tuple[Path, str]] = set()
    with strict_truncation():
        for path in walk_files(
            root, lambda path, why: result.skipped.append(Skipped(path, why)), _is_picture_name
        ):
            if path.suffix in CAPTION_SUFFIXES:
                captions.append(path)
                continue
            if not _is_picture_name(path.name):
                continue
            picture_stems.add((path.parent, path.stem))
            try:
                image = _inspect(path, root, min_size, background)
            except _Skip as skip:
                result.skipped.append(Skipped(path, str(skip)))
                continue
            _attach_caption(image)
            result.images.append(image)
    result.orphans = [path for path in captions if (path.parent, path.stem) not in picture_stems]
    return result


def load_source_image(image: SourceImage, background: Color = WHITE) -> Image.Image:
    """The picture of a scan entry as upright RGB at full size; DatasetError if the file changed or broke since."""
    try:
        data = _read_file(image.path)
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise _Skip("changed since the scan: scan the folder again")
        with strict_truncation(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    return _upright_rgb(opened, background, [])
            except Exception as error:
                raise _Skip(_failure(error, data, image.path.suffix)) from None
    except _Skip as skip:
        raise DatasetError(f"{image.path}: {skip}") from None
