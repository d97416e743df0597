"""Toy-world datasets on disk: kohya layout, captions, determinism, reg folders, raw pictures, bad arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.errors import DatasetError
from data.folders import scan_dataset_dir
from data.toy.dataset import write_concept_dataset, write_raw_pictures
from data.toy.score import analyse, concept_score, parse_prompt


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _captions(folder: Path) -> list[str]:
    return [p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))]


@pytest.mark.parametrize(("concept", "folder"), [("character", "10_sls star"), ("style", "10_chk style")])
def test_layout_captions_and_content(tmp_path: Path, concept: str, folder: str) -> None:
    train_dir, reg_dir = write_concept_dataset(tmp_path, concept, n_images=12)
    assert reg_dir is None and train_dir == tmp_path / "train" and not (tmp_path / "reg").exists()
    (subset,) = scan_dataset_dir(train_dir, False, [".txt"])
    assert subset.name == folder and subset.repeats == 10
    assert [p.name for p in subset.images] == [f"{i:03d}.png" for i in range(12)]
    captions = _captions(subset.folder)
    assert len(captions) == 12 and all(getattr(parse_prompt(c), concept) for c in captions)
    sentences = [c for c in captions if " on a " in c]
    assert len(sentences) == 6  # sentence_fraction=0.5 of them, the rest tags
    for image in subset.images:
        assert Image.open(image).size == (64, 64)
        assert concept_score(Image.open(image), concept) >= 0.9
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_concept_dataset(tmp_path / name, "style", n_images=5, seed=3, reg_images=4)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * 5 + 2 * 4 and a == b
    write_concept_dataset(tmp_path / "c", "style", n_images=5, seed=4, reg_images=4)
    assert _files(tmp_path / "c") != a


def test_reg_pictures_and_caption_mix_never_change_the_concept_pictures(tmp_path: Path) -> None:
    write_concept_dataset(tmp_path / "a", n_images=4)
    write_concept_dataset(tmp_path / "b", n_images=4, reg_images=3, sentence_fraction=1.0)
    pictures = [{k: v for k, v in _files(tmp_path / r / "train").items() if k.endswith(".png")} for r in "ab"]
    assert pictures[0] == pictures[1]
    assert all(c.startswith("a ") for c in _captions(tmp_path / "b" / "train" / "10_sls star"))


def test_character_reg_folder_holds_base_world_stars(tmp_path: Path) -> None:
    _, reg_dir = write_concept_dataset(tmp_path, "character", n_images=2, reg_images=10, sentence_fraction=0)
    (subset,) = scan_dataset_dir(reg_dir, True, [".txt"])
    assert subset.name == "1_star" and len(subset.images) == 10
    for caption in _captions(subset.folder):
        expected = parse_prompt(caption)
        assert expected.shape == "star" and expected.color is not None and not expected.concepts
    for image in subset.images:
        found = analyse(Image.open(image))
        assert found.shape == "star" and found.color != "magenta"
        assert concept_score(Image.open(image), "character") <= 0.1


def test_style_reg_folder_holds_plain_base_scenes(tmp_path: Path) -> None:
    _, reg_dir = write_concept_dataset(tmp_path, "style", n_images=2, reg_images=8)
    (subset,) = scan_dataset_dir(reg_dir, True, [".txt"])
    assert subset.name == "1_style" and len(subset.images) == 8
    assert not any(parse_prompt(c).concepts for c in _captions(subset.folder))
    assert all(concept_score(Image.open(p), "style") <= 0.1 for p in subset.images)


def test_rewriting_replaces_the_earlier_dataset(tmp_path: Path) -> None:
    write_concept_dataset(tmp_path / "a", n_images=6, repeats=5, reg_images=4)
    write_concept_dataset(tmp_path / "a", n_images=3, repeats=8, reg_images=2)
    write_concept_dataset(tmp_path / "b", n_images=3, repeats=8, reg_images=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    (tmp_path / "a" / "train" / "notes.md").write_text("mine")
    with pytest.raises(DatasetError, match="notes.md"):
        write_concept_dataset(tmp_path / "a", n_images=3)
    assert (tmp_path / "a" / "train" / "notes.md").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concept": "portrait"}, "concept `portrait` is unknown"),
        ({"n_images": 0}, "n_images=0"),
        ({"repeats": 0}, "repeats=0"),
        ({"size": 8}, "size=8"),
        ({"reg_images": -1}, "reg_images=-1"),
        ({"sentence_fraction": 1.5}, "sentence_fraction=1.5"),
    ],
)
def test_bad_arguments_raise_dataset_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        write_concept_dataset(tmp_path, **kwargs)
    assert not (tmp_path / "train").exists()


def test_raw_pictures_have_no_captions_and_repeat_per_seed(tmp_path: Path) -> None:
    paths = write_raw_pictures(tmp_path / "a", 5, seed=1, concept="character")
    assert [p.name for p in paths] == [f"{i:03d}.png" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in paths]
    assert all(concept_score(Image.open(p), "character") >= 0.9 for p in paths)
    write_raw_pictures(tmp_path / "b", 5, seed=1, concept="character")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    base = write_raw_pictures(tmp_path / "c", 3, seed=1, size=96)
    assert Image.open(base[0]).size == (96, 96) and np.asarray(Image.open(base[0])).shape == (96, 96, 3)
    with pytest.raises(DatasetError, match="n=0"):
        write_raw_pictures(tmp_path / "d", 0, seed=1)
