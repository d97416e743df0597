"""scripts/bench_train.py: its smallest run on the tiny model drives `python -m train` and the diffusers +
peft baseline and prints the table; the metrics reader takes the steps after the warm-up."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_train.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_step_metrics_skip_the_warmup_and_keep_the_peak_vram(tmp_path):
    bench = load_bench()
    lines = [
        {"step": 1, "loss/current": 1.0, "time/step": 9.0, "memory/peak_vram_gib": 3.0},
        {"step": 2, "loss/current": 1.0, "time/step": 2.0, "memory/peak_vram_gib": 4.5},
        {"step": 3, "loss/current": 1.0, "time/step": 2.5, "memory/peak_vram_gib": 4.0},
        {"step": 3, "loss/epoch_average": 1.0},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert bench.step_metrics(metrics, warmup=1) == ([2.0, 2.5], 4.5)
    assert bench.step_metrics(tmp_path / "absent.jsonl", warmup=1) == ([], None)


@pytest.mark.slow  # make test-full: the benchmark's own run, 20 s
def test_smallest_bench_runs_ours_and_the_baseline_on_tiny(tmp_path):
    command = [sys.executable, str(SCRIPT), "--model", "tiny", "--resolutions", "64", "--steps", "1"]
    command += ["--warmup", "0", "--precisions", "fp32", "--skip-toy", "--keep", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("  ")}
    # engine, s/step, it/s, fastest, RSS, util %: the baseline timed its steps, our run finished (RSS known)
    assert float(rows["baseline"][1]) > 0 and float(rows["baseline"][4]) > 0
    assert float(rows["ours"][4]) > 0, (tmp_path / "ours_tiny_64px_b1_fp32.log").read_text()[-3000:]
    assert "ours/base" in rows and "GFLOP/step" in result.stdout and "total wall time" in result.stdout
    pictures = sorted((tmp_path / "data_64" / "train" / "10_bench person").glob("*.png"))
    assert len(pictures) == 8 and all(p.with_suffix(".txt").is_file() for p in pictures)
