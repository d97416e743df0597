"""Caption files and the caption operations of training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data.captions import read_caption, tag_frequency
from data.errors import DatasetError

EXTS = [".txt", ".caption"]


def test_missing_caption_is_none(tmp_path: Path) -> None:
    assert read_caption(tmp_path / "a.png", EXTS) is None


def test_first_existing_extension_wins(tmp_path: Path) -> None:
    (tmp_path / "a.caption").write_text("from caption")
    assert read_caption(tmp_path / "a.png", EXTS) == "from caption"
    (tmp_path / "a.txt").write_text("from txt")
    assert read_caption(tmp_path / "a.png", EXTS) == "from txt"
    assert read_caption(tmp_path / "a.png", ["caption", "txt"]) == "from caption"  # dot optional


def test_stem_with_dots(tmp_path: Path) -> None:
    (tmp_path / "img.v2.txt").write_text("dotted")
    assert read_caption(tmp_path / "img.v2.png", EXTS) == "dotted"


def test_first_non_empty_line_stripped_and_bom_tolerated(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("\ufeff\n   \n  sls toy, red  \r\nsecond line\n".encode())
    assert read_caption(tmp_path / "a.png", EXTS) == "sls toy, red"


@pytest.mark.parametrize("content", ["", "   \n\n\t\n"])
def test_empty_caption_is_none(tmp_path: Path, content: str) -> None:
    (tmp_path / "a.txt").write_text(content)
    assert read_caption(tmp_path / "a.png", EXTS) is None


def test_utf8_non_ascii_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("少女, café", encoding="utf-8")
    assert read_caption(tmp_path / "a.png", EXTS) == "少女, café"


def test_non_utf8_caption_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("café, rôle".encode("cp1252"))
    with pytest.raises(DatasetError) as info:
        read_caption(tmp_path / "a.png", EXTS)
    message = str(info.value)
    assert str(tmp_path / "a.txt") in message and "save it with UTF-8" in message


def test_tag_frequency() -> None:
    freq = tag_frequency(["sls, red, smile", "sls,  blue ,", "sls, red"])
    assert freq == {"sls": 3, "red": 2, "blue": 1, "smile": 1}
    assert list(freq)[:2] == ["sls", "red"]
    assert Counter(freq) == Counter({"sls": 3, "red": 2, "blue": 1, "smile": 1})
    assert tag_frequency([]) == {}
