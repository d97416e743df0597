"""Toy-world datasets on disk: kohya concept folders with captions, and raw pictures without any.

`write_concept_dataset` writes `root/train/<repeats>_<trigger> <class>/NNN.png + NNN.txt` for the character
or the style of `data.toy.world`, and optionally `root/reg/1_<class>/` with base-world class pictures.
Captions mix the tag and sentence styles that users write. Same arguments → same bytes; every file is
written through a temp file and a rename.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.atomic import write_bytes_atomic
from data.errors import DatasetError
from data.folders import dataset_folder_name, make_subset_folder, parse_folder_name
from data.images import png_bytes, write_captioned_picture
from data.toy.world import CONCEPTS, Scene, caption, render, sample_scene

_OURS = re.compile(r"^\d+\.(png|txt)$")  # the only names this module writes into a folder


def _only_ours(folder: Path) -> bool:
    return all(_OURS.match(p.name) for p in folder.iterdir() if not p.name.startswith("."))


def _prepare(parent: Path, repeats: int, token: str, class_word: str) -> Path:
    """The subset folder, emptied of an earlier run's pictures (also one with other repeats), else untouched."""
    name = dataset_folder_name(repeats, token, class_word)
    tokens = parse_folder_name(name)[1]
    if parent.is_dir():
        for entry in sorted(p for p in parent.iterdir() if not p.name.startswith(".")):
            same = entry.is_dir() and re.match(r"^\d+_", entry.name) and entry.name.split("_", 1)[1] == tokens
            if not same or not _only_ours(entry):
                raise DatasetError(
                    f"{parent} already holds `{entry.name}`, which is not a toy dataset folder for `{tokens}`: "
                    "write the toy dataset into an empty folder, or delete that entry"
                )
            if entry.name != name:
                shutil.rmtree(entry)  # the same dataset with other repeats: it would train twice
            else:
                for stale in entry.iterdir():
                    if _OURS.match(stale.name):
                        stale.unlink()
    return make_subset_folder(parent, repeats, token, class_word)


def _sentences(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which of `count` captions are sentences: exactly round(count * fraction) of them, at seeded places."""
    chosen = np.zeros(count, bool)
    chosen[rng.permutation(count)[: round(count * fraction)]] = True
    return chosen


def _write_pictures(
    folder: Path,
    scenes: list[Scene],
    size: int,
    sentence_fraction: float,
    rng: np.random.Generator,
    width: int,
) -> None:
    sentences = _sentences(len(scenes), sentence_fraction, rng)
    for i, (scene, sentence) in enumerate(zip(scenes, sentences, strict=True)):
        write_captioned_picture(
            folder, f"{i:0{width}d}", render(scene, size), caption(scene, bool(sentence)) + "\n"
        )


def _check_args(
    concept: str, n_images: int, repeats: int, size: int, reg_images: int, fraction: float
) -> None:
    if concept not in CONCEPTS:
        raise DatasetError(f"toy dataset: concept `{concept}` is unknown; use one of {', '.join(CONCEPTS)}")
    if n_images < 1:
        raise DatasetError(f"toy dataset: n_images={n_images} must be at least 1")
    if repeats < 1:
        raise DatasetError(f"toy dataset: repeats={repeats} must be at least 1 (each image seen per epoch)")
    if size < 16:
        raise DatasetError(
            f"toy dataset: size={size} is too small to draw the toy world; use 16 pixels or more"
        )
    if reg_images < 0:
        raise DatasetError(f"toy dataset: reg_images={reg_images} must be 0 or more")
    if not 0.0 <= fraction <= 1.0:
        raise DatasetError(f"toy dataset: sentence_fraction={fraction} must lie between 0 and 1")


def _reg_scene(rng: np.random.Generator, concept: str) -> Scene:
    """A base-world picture of the concept's class: a star of a palette colour for the character."""
    scene = sample_scene(rng)
    return replace(scene, shape="star") if concept == "character" else scene


def concept_dataset_dirs(root: str | Path, reg_images: int) -> tuple[Path, Path | None]:
    """Where `write_concept_dataset` puts the kohya train and reg folders under `root` (reg: None if none)."""
    root = Path(root)
    return root / "train", (root / "reg" if reg_images else None)


def write_concept_dataset(
    root: str | Path,
    concept: str = "character",
    n_images: int = 20,
    repeats: int = 10,
    seed: int = 0,
    size: int = 64,
    reg_images: int = 0,
    sentence_fraction: float = 0.5,
) -> tuple[Path, Path | None]:
    """Write `root/train/<repeats>_<trigger> <class>/` (+ `root/reg/1_<class>/`); return (train_dir, reg_dir)."""
    _check_args(concept, n_images, repeats, size, reg_images, sentence_fraction)
    held_out = CONCEPTS[concept]
    width = max(3, len(str(max(n_images, reg_images) - 1)))
    train_dir, reg_dir = concept_dataset_dirs(root, reg_images)
    folder = _prepare(train_dir, repeats, held_out.trigger, held_out.class_word)
    # Separate streams: the reg pictures or the caption mix never change the concept pictures.
    rng = np.random.default_rng([seed, 0])
    scenes = [sample_scene(rng, concept) for _ in range(n_images)]
    _write_pictures(folder, scenes, size, sentence_fraction, np.random.default_rng([seed, 1]), width)
    if reg_dir is None:
        return train_dir, None
    reg_folder = _prepare(reg_dir, 1, "", held_out.class_word)
    rng = np.random.default_rng([seed, 2])
    scenes = [_reg_scene(rng, concept) for _ in range(reg_images)]
    _write_pictures(reg_folder, scenes, size, sentence_fraction, np.random.default_rng([seed, 3]), width)
    return train_dir, reg_dir


def write_raw_pictures(
    folder: str | Path, n: int, seed: int, concept: str | None = None, size: int = 64
) -> list[Path]:
    """Write `n` captionless pictures `NNN.png` of the base world or of `concept`; return their paths."""
    if concept is not None and concept not in CONCEPTS:
        raise DatasetError(f"raw pictures: concept `{concept}` is unknown; use one of {', '.join(CONCEPTS)}")
    if n < 1:
        raise DatasetError(f"raw pictures: n={n} must be at least 1")
    if size < 16:
        raise DatasetError(f"raw pictures: size={size} is too small to draw the toy world; use 16 or more")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 4])
    width = max(3, len(str(n - 1)))
    paths = [folder / f"{i:0{width}d}.png" for i in range(n)]
    for path in paths:
        write_bytes_atomic(path, png_bytes(render(sample_scene(rng, concept), size)))
    return paths
