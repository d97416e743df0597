"""`manifest.jsonl`: one line per finished source picture, appended as each is written, so that a killed run
can resume. A torn last line (a kill during the append) is ignored on reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.atomic import write_bytes_atomic


class Manifest:
    """The finished entries of an output folder, keyed by the source file's sha256."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half-written line of a killed run: that picture is simply redone
                self.entries[entry["sha256"]] = entry

    def is_done(self, sha256: str, root: Path) -> bool:
        """Whether the picture with this hash was finished and all its output files are still there."""
        entry = self.entries.get(sha256)
        # A size of 0 is what a power cut can leave of a file written just before it.
        return entry is not None and all(
            (root / path).is_file() and (root / path).stat().st_size > 0 for path in entry["outputs"]
        )

    def append(self, entry: dict[str, Any]) -> None:
        """Record a finished picture: one JSON line, flushed to the OS (a killed process loses nothing)."""
        self.entries[entry["sha256"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            out.flush()

    def rewrite(self, order: list[str]) -> None:
        """Rewrite the file cleanly (no torn lines, no stale entries) with the entries of `order`'s hashes."""
        lines = [json.dumps(self.entries[h], ensure_ascii=False) for h in order if h in self.entries]
        write_bytes_atomic(self.path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
