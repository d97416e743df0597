"""sha256 of a file, read in blocks, and A1111's 10-digit short form of it."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def file_sha256(path: str | Path, start: int = 0) -> str:
    """Hex sha256 of the file's bytes from offset `start` on; OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(start)
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def short_file_hash(path: str | Path) -> str:
    """A1111's short hash of a checkpoint, VAE or embedding file: the first 10 hex digits of its sha256."""
    return file_sha256(path)[:10]
