"""Atomic writes: ordinary modes, whole folders swapped into place, and a full disk that loses nothing."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import data.atomic as atomic
from data.atomic import (
    DiskFullError,
    atomic_directory,
    is_temp_name,
    write_bytes_atomic,
    write_text_atomic,
)
from data.errors import LoraSmithError

REPO = Path(__file__).resolve().parents[1]

# Writes 100 kB under a 4 kB file size limit (ulimit -f) with SIGXFSZ ignored, so write() fails with EFBIG
# partway through, as a full disk would (ENOSPC takes the same path).
FULL_DISK_CHILD = """
import resource, signal, sys
from data.atomic import DiskFullError, atomic_directory, write_bytes_atomic

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
kind, target = sys.argv[1], sys.argv[2]
try:
    if kind == "file":
        write_bytes_atomic(target, b"n" * 100_000)
    else:
        with atomic_directory(target) as tmp:
            (tmp / "model.bin").write_bytes(b"n" * 100_000)
except DiskFullError as error:
    print(error)
    sys.exit(3)
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def run_full_disk_child(kind: str, target: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, kind, str(target)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_get_the_ordinary_mode(tmp_path, umask, mask, expected):
    umask(mask)
    path = write_bytes_atomic(tmp_path / "a.safetensors", b"abc")
    assert mode(path) == expected
    assert path.read_bytes() == b"abc"


def test_replacing_a_private_file_gives_the_ordinary_mode(tmp_path, umask):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o600)
    write_bytes_atomic(path, b"new")
    assert (mode(path), path.read_bytes()) == (0o644, b"new")
    assert os.listdir(tmp_path) == ["lora.safetensors"]


def test_write_text_atomic_makes_folders_and_keeps_newlines(tmp_path, umask):
    path = write_text_atomic(tmp_path / "sub" / "report.md", "é\r\nline\n", durable=False)
    assert path.read_bytes() == "é\r\nline\n".encode()
    assert mode(path) == 0o644
    assert os.listdir(path.parent) == ["report.md"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"old")

    def broken_write(handle, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic.os, "write", broken_write)
    with pytest.raises(OSError, match="Input/output") as caught:
        write_bytes_atomic(path, b"new")
    assert not isinstance(caught.value, LoraSmithError)  # only a full disk is the user's to fix
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["lora.safetensors"]


def test_no_space_left_is_one_line_naming_the_file_and_free_space(tmp_path, monkeypatch):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(b"old")

    def full_write(handle, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "write", full_write)
    with pytest.raises(DiskFullError) as caught:
        write_bytes_atomic(path, b"new")
    message = str(caught.value)
    assert isinstance(caught.value, LoraSmithError) and "\n" not in message
    assert str(path) in message and "No space left on device" in message
    assert " free there)" in message and "free some space and run again (resume=auto continues)" in message
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["lora.safetensors"]


def test_file_size_limit_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"previous epoch")
    done = run_full_disk_child("file", target)
    assert done.returncode == 3, done.stderr
    message = done.stdout.strip()
    assert message.startswith(f"cannot write {target}: File too large (") and "\n" not in message
    assert message.endswith("free some space and run again (resume=auto continues)")
    assert target.read_bytes() == b"previous epoch"
    assert os.listdir(tmp_path) == ["lora.safetensors"]


def test_file_size_limit_inside_a_folder_keeps_the_old_folder(tmp_path):
    final = tmp_path / "lora-state"
    final.mkdir()
    (final / "model.bin").write_bytes(b"previous state")
    done = run_full_disk_child("folder", final)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"cannot write {final}: File too large (")
    assert (final / "model.bin").read_bytes() == b"previous state"
    assert os.listdir(tmp_path) == ["lora-state"]


def test_atomic_directory_creates_the_folder_with_its_temp_name_beside_it(tmp_path, umask):
    final = tmp_path / "runs" / "lora-000002-state"
    with atomic_directory(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith("lora-000002-state.tmp-")
        assert is_temp_name(tmp.name) and not final.exists()
        (tmp / "optimizer.bin").write_bytes(b"o")
    assert (final / "optimizer.bin").read_bytes() == b"o"
    assert mode(final) == 0o755
    assert os.listdir(final.parent) == ["lora-000002-state"]


@pytest.mark.parametrize("exchange", [True, False], ids=["swap", "rename-aside"])
def test_atomic_directory_replaces_an_existing_folder_whole(tmp_path, umask, monkeypatch, exchange):
    swaps = []
    real_exchange = atomic._exchange
    monkeypatch.setattr(
        atomic, "_exchange", lambda a, b: swaps.append(b) or (exchange and real_exchange(a, b))
    )
    final = tmp_path / "lora-state"
    final.mkdir(mode=0o700)
    (final / "stale.bin").write_bytes(b"old")
    with atomic_directory(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.bin").write_bytes(b"new")
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["sub", "sub/model.bin"]
    assert mode(final) == 0o755
    assert os.listdir(tmp_path) == ["lora-state"]
    assert swaps == [final]  # the existing folder took the replacing path, not a plain rename


def test_atomic_directory_on_an_exception_keeps_the_old_folder(tmp_path):
    final = tmp_path / "lora-state"
    final.mkdir()
    (final / "model.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt
    assert os.listdir(final) == ["model.bin"] and (final / "model.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["lora-state"]


def test_temp_names_are_recognised():
    assert is_temp_name(".lora.safetensors-1a2b3c4d.tmp")
    assert is_temp_name("lora-state.tmp-1a2b3c4d") and is_temp_name("lora-state.tmp-old-00ff")
    assert not is_temp_name("lora.safetensors") and not is_temp_name("notes.tmpl")
    assert not is_temp_name("tmp") and not is_temp_name(".lock")
