"""The simple toy concept generator: layout, captions, content, and byte-identical output for a seed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.errors import DatasetError
from data.folders import scan_dataset_dir
from data.toy import write_toy_concept_dataset
from data.toy.simple_concept import CONCEPT_BACKGROUNDS, REG_COLORS, REG_SHAPES, SIZES


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _magenta_fraction(path: Path) -> float:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((r > 180) & (g < 90) & (b > 150)).mean())


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    write_toy_concept_dataset(tmp_path / "a", n_images=5, seed=3, reg_images=4)
    write_toy_concept_dataset(tmp_path / "b", n_images=5, seed=3, reg_images=4)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * 5 + 2 * 4 and a == b
    write_toy_concept_dataset(tmp_path / "c", n_images=5, seed=4, reg_images=4)
    assert _files(tmp_path / "c") != a


def test_reg_images_do_not_change_the_concept_images(tmp_path: Path) -> None:
    write_toy_concept_dataset(tmp_path / "a", n_images=4)
    write_toy_concept_dataset(tmp_path / "b", n_images=4, reg_images=3)
    assert _files(tmp_path / "a" / "train") == _files(tmp_path / "b" / "train")


def test_layout_and_captions(tmp_path: Path) -> None:
    train_dir, reg_dir = write_toy_concept_dataset(tmp_path, n_images=12, repeats=10)
    assert reg_dir is None and train_dir == tmp_path / "train"
    (subset,) = scan_dataset_dir(train_dir, False, [".txt"])
    assert subset.name == "10_sls toy" and subset.repeats == 10 and subset.class_tokens == "sls toy"
    assert [p.name for p in subset.images] == [f"{i:03d}.png" for i in range(12)]
    pattern = re.compile(rf"^sls toy, ({'|'.join(CONCEPT_BACKGROUNDS)}) background, ({'|'.join(SIZES)})$")
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in subset.images]
    assert all(pattern.match(c) for c in captions), captions
    assert len({c.split(", ")[1] for c in captions}) >= 3  # varied backgrounds
    assert len({c.split(", ")[2] for c in captions}) >= 2  # varied sizes
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files left behind


def test_concept_images_show_the_star_and_reg_images_do_not(tmp_path: Path) -> None:
    train_dir, reg_dir = write_toy_concept_dataset(
        tmp_path, n_images=6, reg_images=6, size=32, class_word="toy"
    )
    assert reg_dir == tmp_path / "reg"
    for path in sorted(train_dir.rglob("*.png")):
        image = Image.open(path)
        assert image.size == (32, 32) and image.mode == "RGB"
        assert _magenta_fraction(path) > 0.02
    (reg,) = scan_dataset_dir(reg_dir, True, [".txt"])
    assert reg.name == "1_toy" and len(reg.images) == 6
    pattern = re.compile(rf"^toy, ({'|'.join(REG_COLORS)}) ({'|'.join(REG_SHAPES)}), (\w+) background$")
    for path in reg.images:
        assert _magenta_fraction(path) == 0.0
        match = pattern.match(path.with_suffix(".txt").read_text(encoding="utf-8").strip())
        assert match and match.group(1) != match.group(3)


def test_custom_trigger_and_class(tmp_path: Path) -> None:
    train_dir, _ = write_toy_concept_dataset(
        tmp_path, n_images=2, repeats=3, trigger="ohwx", class_word="star"
    )
    assert (train_dir / "3_ohwx star" / "000.txt").read_text(encoding="utf-8").startswith("ohwx star, ")


@pytest.mark.parametrize(
    "kwargs", [{"n_images": 0}, {"repeats": 0}, {"size": 4}, {"trigger": " "}, {"reg_images": -1}]
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        write_toy_concept_dataset(tmp_path, **kwargs)
