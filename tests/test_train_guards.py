"""What a run does when things go wrong: NaN, a busy or used run folder, a full disk, leftovers of a kill,
half precision on a CPU, a random seed; and the modes of what it writes. All through `python -m train`."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.test_cli import REPO, run_train

TINY = ["+experiment=char_lora", "logger=none", "eval.enabled=false", "dataset.toy_images=4"]
TINY += ["dataset.toy_repeats=1", "dataset.toy_reg_images=0", "training.batch_size=2"]


def header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_lora(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        run_dir, *TINY, "optimizer.lr=1e12", "optimizer.unet_lr=1e12", "optimizer.text_encoder_lr=1e12",
        "training.max_train_steps=8", "training.save_every_n_steps=1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert (
        "at step" in line and "lower the learning rate" in line.lower() and "Traceback" not in result.stderr
    )
    saved = sorted(run_dir.glob("char_lora-step*.safetensors"))
    assert saved and not (run_dir / "char_lora.safetensors").exists()
    assert str(saved[-1]) in line  # the message names the last good file
    assert all(bool(torch.isfinite(t).all()) for t in load_file(str(saved[-1])).values())
    for row in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(row)  # strict JSON: no bare NaN


def test_outputs_are_ordinary_files_and_a_rerun_into_the_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = run_train(run_dir, *TINY, "training.max_train_steps=2", "training.save_state=true", env={})
    assert first.returncode == 0, first.stderr[-3000:]
    mask = os.umask(0)
    os.umask(mask)
    for path in [run_dir / "char_lora.safetensors", run_dir / "config.yaml", *run_dir.glob("*-state/*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    before = (run_dir / "char_lora.safetensors").read_bytes()
    again = run_train(run_dir, *TINY, "training.max_train_steps=2")
    assert again.returncode == 2
    (line,) = error_lines(again.stderr)
    assert "char_lora.safetensors" in line and "resume=auto" in line
    assert (run_dir / "char_lora.safetensors").read_bytes() == before


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from train.run_folder import lock_run_folder
            with lock_run_folder({str(run_dir)!r}):
                print("locked", flush=True)
                time.sleep(120)
        """)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_train(run_dir, *TINY, "training.max_train_steps=2")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "another training run is using" in line and str(holder.pid) in line


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_temp_file(tmp_path):
    """The LoRA (2 MB) cannot be written under a 1 MB file-size limit: EFBIG, as a full disk would."""
    run_dir = tmp_path / "run"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    command = [sys.executable, "-m", "train", *TINY, "training.max_train_steps=2", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=limit)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert "char_lora.safetensors" in line and "free some space" in line
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert not (run_dir / "char_lora.safetensors").exists()


def test_leftovers_of_a_kill_are_cleared_and_a_random_seed_is_recorded(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stray = [run_dir / ".char_lora.safetensors-1a2b.tmp", run_dir / "char_lora-state.tmp-3c4d"]
    stray[0].write_bytes(b"half a file")
    stray[1].mkdir()
    result = run_train(run_dir, *TINY, "training.max_train_steps=1", "seed=-1", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(p.exists() for p in stray)
    seed = header(run_dir / "char_lora.safetensors")["ss_seed"]
    assert seed != "-1" and 0 <= int(seed) < 2**31
    assert f"seed: {seed}" in (run_dir / "config.yaml").read_text()


def test_fp16_on_a_cpu_says_so_once_and_trains_in_fp32(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *TINY, "training.max_train_steps=1", "training.mixed_precision=fp16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("needs a CUDA GPU") == 1
    assert header(run_dir / "char_lora.safetensors")["ss_mixed_precision"] == "no"


def test_bf16_runs_in_bf16_only_where_the_cpu_computes_it_natively(tmp_path):
    from train.precision import cpu_has_native_bf16

    run_dir = tmp_path / "run"
    result = run_train(
        run_dir,
        *TINY,
        "training.max_train_steps=2",
        "training.mixed_precision=bf16",
        "training.full_bf16=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    native = cpu_has_native_bf16()
    assert header(run_dir / "char_lora.safetensors")["ss_mixed_precision"] == ("bf16" if native else "no")
    assert ("no native bf16" in result.stdout + result.stderr) != native


@pytest.mark.slow
def test_compile_trains_as_eager_does(tmp_path):
    """torch.compile fuses operations, so the LoRA matches the eager one to rounding, not bit for bit (Adam
    turns tiny gradient differences of near-zero gradients into lr-sized steps: compare whole norms)."""
    eager = run_train(tmp_path / "eager", *TINY, "training.max_train_steps=3")
    compiled = run_train(tmp_path / "compiled", *TINY, "training.max_train_steps=3", "training.compile=true")
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr[-3000:]
    a = load_file(str(tmp_path / "eager" / "char_lora.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "char_lora.safetensors"))
    assert a.keys() == b.keys()
    difference = sum(float((a[k] - b[k]).norm() ** 2) for k in a) ** 0.5
    assert difference <= 0.02 * sum(float(a[k].norm() ** 2) for k in a) ** 0.5
