"""Each classic dataset-folder mistake gives one clear error line, a non-zero exit and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.test_cli import run_train


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)


def _image_folder_itself(root: Path) -> tuple[Path, str]:
    _image(root / "pics" / "a.png")
    return root / "pics", "10_"


def _no_repeats_prefix(root: Path) -> tuple[Path, str]:
    _image(root / "train" / "sls 1girl" / "a.png")
    return root / "train", "10_sls 1girl"


def _empty_concept_folder(root: Path) -> tuple[Path, str]:
    (root / "train" / "10_sls 1girl").mkdir(parents=True)
    return root / "train", "10_sls 1girl"


def _missing_folder(root: Path) -> tuple[Path, str]:
    return root / "nowhere", "nowhere"


MISTAKES = {
    "image folder itself": _image_folder_itself,
    "no N_ prefix": _no_repeats_prefix,
    "empty folder": _empty_concept_folder,
    "missing folder": _missing_folder,
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_folder_mistake_is_one_clear_line(mistake, tmp_path):
    train_dir, must_mention = MISTAKES[mistake](tmp_path)
    result = run_train(tmp_path / "run", "model=tiny", "logger=none", f"dataset.train_dir={train_dir}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert must_mention in errors[0]
    assert "No data found" not in result.stderr


def test_full_error_shows_the_traceback(tmp_path):
    train_dir, _ = _no_repeats_prefix(tmp_path)
    result = run_train(
        tmp_path / "run",
        "model=tiny",
        "logger=none",
        f"dataset.train_dir={train_dir}",
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DatasetError" in result.stderr


def test_bad_config_value_lists_the_choices(tmp_path):
    result = run_train(tmp_path / "run", "model=tiny", "logger=none", "dataset.train_dir=x", "model.kind=big")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tiny, tiny_sdxl, sd15_arch, sdxl_arch, pretrained" in result.stderr
