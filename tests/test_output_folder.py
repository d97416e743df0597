"""A run folder that cannot be made, or that lies inside the pictures a run reads, is one line before Hydra
writes anything (typed on the command line) or before training (from a config file)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from data.output_folder import folder_problem, typed_values
from tests.test_cli import REPO
from train.run_folder import RunFolderError, check_outside_pictures


def test_typed_values_drop_hydras_quotes_and_plus():
    argv = ["-m", "+x.y=1", "hydra.run.dir='/a b'", 'dataset.train_dir="/p"', "flag"]
    assert typed_values(argv) == {"x.y": "1", "hydra.run.dir": "/a b", "dataset.train_dir": "/p"}


def test_a_folder_under_a_file_or_inside_the_pictures_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    assert folder_problem("hydra.run.dir", str(tmp_path / "file" / "run"), {}) == (
        f"hydra.run.dir={tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder; choose another "
        "hydra.run.dir"
    )
    pictures = tmp_path / "train"
    problem = folder_problem("hydra.run.dir", str(pictures / "out"), {"dataset.train_dir": str(pictures)})
    assert problem and "is inside dataset.train_dir" in problem and not pictures.exists()
    assert folder_problem("hydra.run.dir", str(tmp_path / "new" / "run"), {}) is None
    assert (tmp_path / "new" / "run").is_dir()  # made now, as Hydra would


def test_a_run_folder_inside_the_pictures_from_a_config_file_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match="is inside dataset.reg_dir="):
        check_outside_pictures(tmp_path / "reg" / "run", str(tmp_path / "train"), str(tmp_path / "reg"))
    check_outside_pictures(tmp_path / "run", str(tmp_path / "train"), None)


def test_python_m_train_into_a_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    command = [sys.executable, "-m", "train", f"hydra.run.dir={tmp_path / 'file' / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder; choose "
        "another hydra.run.dir"
    ]


def test_python_m_data_with_out_inside_the_source_creates_nothing_there(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.txt").write_text("only read")
    command = [
        sys.executable,
        "-m",
        "data",
        f"source={tmp_path / 'pics'}",
        f"out={tmp_path / 'pics' / 'out'}",
    ]
    command += ["trigger=sls", "class_word=star"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: out={tmp_path / 'pics' / 'out'} is inside source={tmp_path / 'pics'}: a run would write among the "
        "pictures it reads"
    ]
    assert [p.name for p in (tmp_path / "pics").iterdir()] == ["a.txt"]
