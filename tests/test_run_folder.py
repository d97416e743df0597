"""One run per run folder: the lock between real processes, a killed run's leftovers, earlier LoRA files."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import train.run_folder as run_folder
from data.errors import LoraSmithError
from train.run_folder import (
    RunFolderError,
    check_fresh_run_folder,
    clean_stale_temp_files,
    lock_run_folder,
    previous_run_outputs,
)

REPO = Path(__file__).resolve().parents[1]

# Takes the lock (or starts filling a state folder), says so, then waits to be killed.
HOLDER_CHILD = """
import sys, time
from pathlib import Path
from data.atomic import atomic_directory
from train.run_folder import lock_run_folder

kind, target = sys.argv[1], Path(sys.argv[2])
with lock_run_folder(target) if kind == "lock" else atomic_directory(target) as place:
    if kind == "state":
        (place / "model.bin").write_bytes(b"half written")
    print("ready", flush=True)
    time.sleep(120)
"""


def start_holder(kind: str, target: Path) -> subprocess.Popen:
    """A child that holds the lock of `target` (kind="lock") or is filling state folder `target` ("state")."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER_CHILD, kind, str(target)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if child.stdout.readline().strip() != "ready":
        child.kill()
        pytest.fail(f"child did not start: {child.communicate(timeout=30)[1]}")
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_second_run_is_refused_until_the_first_dies(tmp_path):
    run_dir = tmp_path / "run"
    child = start_holder("lock", run_dir)
    try:
        with pytest.raises(RunFolderError) as caught, lock_run_folder(run_dir):
            pytest.fail("took a lock that another process holds")
        message = str(caught.value)
        assert message.startswith(f"another training run is using {run_dir} (pid {child.pid}, started at ")
        assert message.endswith("): wait for it or pick another hydra.run.dir")
        assert isinstance(caught.value, LoraSmithError)
    finally:
        kill(child)
    with lock_run_folder(run_dir) as lock:  # the OS released the dead child's lock
        assert lock == run_dir / ".lock"
        assert lock.read_text().split("\n")[0] == str(os.getpid())


def test_lock_file_is_readable_and_emptied_on_release(tmp_path):
    old = os.umask(0o022)
    try:
        with lock_run_folder(tmp_path) as lock:
            assert stat.S_IMODE(lock.stat().st_mode) == 0o644
            with pytest.raises(RunFolderError, match=f"pid {os.getpid()}, started at "):
                with lock_run_folder(tmp_path):  # a second open file is refused even in one process
                    pass
        assert lock.read_text() == ""
        with lock_run_folder(tmp_path):  # released on exit
            pass
    finally:
        os.umask(old)


def test_a_folder_where_the_lock_file_goes_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(
        RunFolderError, match=r"cannot open the run folder's lock file .*\.lock \(Is a directory\)"
    ):
        with lock_run_folder(tmp_path):
            pass


def test_filesystem_without_locks_warns_and_runs(tmp_path, monkeypatch):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(run_folder.fcntl, "flock", no_locks)
    ran = []
    with pytest.warns(UserWarning, match="cannot lock files"), lock_run_folder(tmp_path):
        ran.append(True)
    assert ran == [True]


def test_clean_removes_what_a_killed_run_left_and_nothing_else(tmp_path):
    (tmp_path / "lora.safetensors").write_bytes(b"final")
    (tmp_path / ".lora-000001.safetensors-1a2b3c4d.tmp").write_bytes(b"half")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / ".grid.png-00ff00ff.tmp").write_bytes(b"half")
    (tmp_path / "eval" / "notes.tmpl").write_text("kept")
    (tmp_path / "lora-state").mkdir()
    (tmp_path / "lora-state" / "model.bin").write_bytes(b"kept")
    (tmp_path / "lora-state.tmp-0a0b0c0d" / "sub").mkdir(parents=True)
    (tmp_path / "lora-state.tmp-0a0b0c0d" / "sub" / "model.bin").write_bytes(b"half")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "precious.bin").write_bytes(b"user data")
    (tmp_path / "link.tmp-11223344").symlink_to(outside, target_is_directory=True)
    with lock_run_folder(tmp_path):
        removed = clean_stale_temp_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in removed] == [
        ".lora-000001.safetensors-1a2b3c4d.tmp",
        "eval/.grid.png-00ff00ff.tmp",
        "link.tmp-11223344",
        "lora-state.tmp-0a0b0c0d",
    ]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == [
        ".lock",
        "eval",
        "eval/notes.tmpl",
        "lora-state",
        "lora-state/model.bin",
        "lora.safetensors",
    ]
    assert (outside / "precious.bin").read_bytes() == b"user data"  # a symlink is removed, not followed


def test_state_folder_of_a_killed_run_is_cleaned_and_the_old_one_kept(tmp_path):
    final = tmp_path / "lora-state"
    final.mkdir()
    (final / "model.bin").write_bytes(b"complete")
    kill(start_holder("state", final))
    assert len(os.listdir(tmp_path)) == 2  # the old state and the killed run's temp folder
    removed = clean_stale_temp_files(tmp_path)
    assert len(removed) == 1 and removed[0].name.startswith("lora-state.tmp-")
    assert os.listdir(tmp_path) == ["lora-state"]
    assert (final / "model.bin").read_bytes() == b"complete"


def make_earlier_run(run_dir: Path) -> None:
    for name in [
        "lora.safetensors",
        "lora-000001.safetensors",
        "lora-000002.safetensors",
        "lora-step00000100.safetensors",
        ".lora.safetensors-1a2b3c4d.tmp",
        "lora-best.safetensors",
        "other.safetensors",
        "lora.ckpt",
        "lora-state",  # a file, not a state folder
    ]:
        (run_dir / name).write_bytes(b"x")
    for name in ["lora-000002-state", "lora-step00000100-state", "lora-state.tmp-0a0b0c0d", "lorax-state"]:
        (run_dir / name).mkdir()


def test_previous_run_outputs_finds_lora_files_and_states_of_that_name(tmp_path):
    make_earlier_run(tmp_path)
    assert [p.name for p in previous_run_outputs(tmp_path, "lora")] == [
        "lora.safetensors",
        "lora-000001.safetensors",
        "lora-000002.safetensors",
        "lora-step00000100.safetensors",
        "lora-000002-state",
        "lora-step00000100-state",
    ]
    (tmp_path / "lora-state").unlink()
    (tmp_path / "lora-state").mkdir()
    assert tmp_path / "lora-state" in previous_run_outputs(tmp_path, "lora")
    assert previous_run_outputs(tmp_path, "l.ra") == []  # the name is matched literally
    assert previous_run_outputs(tmp_path / "missing", "lora") == []


def test_check_fresh_run_folder_refuses_an_earlier_run_unless_resuming(tmp_path):
    check_fresh_run_folder(tmp_path, "lora", resuming=False)  # empty: fine
    make_earlier_run(tmp_path)
    check_fresh_run_folder(tmp_path, "lora", resuming=True)
    check_fresh_run_folder(tmp_path, "other-name", resuming=False)
    with pytest.raises(RunFolderError) as caught:
        check_fresh_run_folder(tmp_path, "lora", resuming=False)
    assert str(caught.value) == (
        f"{tmp_path} already holds the LoRA files of an earlier run (lora.safetensors, "
        "lora-000001.safetensors, lora-000002.safetensors and 3 more): add resume=auto to continue it, "
        "or choose another hydra.run.dir"
    )
