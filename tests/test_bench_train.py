"""scripts/bench_train.py: its smallest run on the tiny model drives `python -m train` and the diffusers +
peft baseline and prints the table; the metrics reader takes the steps after the warm-up. The SDXL baseline
conditions the UNet as our SDXL step does and adapts the layers ours trains."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.models.tiny_sdxl import build_tiny_sdxl
from train.network.targets import encoder_targets, unet_targets
from train.sdxl_step import encode_sdxl_text, size_conditioning

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_train.py"
BASELINE = REPO / "scripts" / "bench_train_baseline.py"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_bench():
    return load_script("bench_train")


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


def test_rounds_alternate_the_engines_and_pool_their_steps(tmp_path, monkeypatch):
    """--rounds 2 runs ours, baseline, baseline, ours: a machine that drifts favours neither; the steps pool."""
    bench = load_bench()
    order = []

    def fake(engine, seconds, rss):
        def run(args, row, data, work, *rest):
            order.append(engine)
            return bench.Measurement(step_seconds=[seconds + len(order)], rss_gib=rss + len(order), flops=7.0)

        return run

    monkeypatch.setattr(bench, "measure_ours", fake("ours", 1.0, 4.0))
    monkeypatch.setattr(bench, "measure_baseline", fake("baseline", 2.0, 5.0))
    monkeypatch.setattr(bench, "write_pictures", lambda folder, resolution: None)
    args = bench.parse_args(["--model", "tiny", "--resolutions", "64", "--skip-toy", "--rounds", "2"])
    rows = bench.plan_rows(args, ["fp32"])
    bench.measure(args, rows, tmp_path)
    assert order == ["ours", "baseline", "baseline", "ours"]
    [row] = rows
    assert row.ours.step_seconds == [2.0, 5.0] and row.ours.rss_gib == 8.0
    assert row.baseline.step_seconds == [4.0, 5.0] and row.baseline.rss_gib == 8.0
    assert row.flops == 7.0
    failed = bench.pooled(bench.Measurement(error="exit 1"), bench.Measurement(step_seconds=[1.0]))
    assert failed.error == "exit 1"


def test_sdxl_baseline_conditions_the_unet_as_our_sdxl_step():
    sdxl = load_script("bench_train_baseline_sdxl")
    bundle = build_tiny_sdxl(0)
    captions = ["bench person, a red circle", "a blue square"]
    ids = [t(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
           for t in (bundle.tokenizer, bundle.tokenizer_2)]  # fmt: skip
    with torch.no_grad():
        states, pooled = sdxl.encode_prompt([bundle.text_encoder, bundle.text_encoder_2], ids)
        ours_states, ours_pooled = encode_sdxl_text(bundle.text_encoder, bundle.text_encoder_2, *ids)
    assert states.shape == (2, 77, 64) and pooled.shape == (2, 32)
    torch.testing.assert_close(states, ours_states)
    torch.testing.assert_close(pooled, ours_pooled)
    time_ids = sdxl.compute_time_ids([(64, 64), (48, 64)], [(0, 0)] * 2, (64, 64), torch.zeros(1))
    assert time_ids.tolist() == [[64, 64, 0, 0, 64, 64], [48, 64, 0, 0, 64, 64]]
    assert time_ids[0].tolist() == size_conditioning((64, 64), (64, 64), flipped=False).tolist()


def test_sdxl_baseline_step_trains_the_layers_ours_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # as when run: its SDXL module lies next to it
    baseline = load_script("bench_train_baseline")
    load_bench().write_pictures(tmp_path / "10_bench person", 64, count=2)
    args = ["--model", "tiny_sdxl", "--train-dir", str(tmp_path), "--resolution", "64"]
    record = baseline.run(baseline.parse_args([*args, "--steps", "1", "--warmup", "0", "--count-flops"]))
    assert len(record["step_seconds"]) == 1 and record["flops"] > 0
    bundle = build_tiny_sdxl(0)
    n_te = sum(len(targets) for _, targets in encoder_targets(bundle))  # lora_te1 + lora_te2, as ours
    stages = capsys.readouterr().err
    assert n_te == 24 and f"on {len(unet_targets(bundle.unet))} UNet + {n_te} text-encoder" in stages


@pytest.mark.slow  # make test-full: the benchmark's own run, 20-40 s each
@pytest.mark.parametrize("model", ["tiny", "tiny_sdxl"])
def test_smallest_bench_runs_ours_and_the_baseline(tmp_path, model):
    command = [sys.executable, str(SCRIPT), "--model", model, "--resolutions", "64", "--steps", "1"]
    command += ["--warmup", "0", "--precisions", "fp32", "--skip-toy", "--keep", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("  ")}
    # engine, s/step, it/s, fastest, RSS, util %: the baseline timed its steps, our run finished (RSS known)
    assert float(rows["baseline"][1]) > 0 and float(rows["baseline"][4]) > 0
    assert float(rows["ours"][4]) > 0, (tmp_path / f"ours_{model}_64px_b1_fp32.log").read_text()[-3000:]
    assert "ours/base" in rows and "GFLOP/step" in result.stdout and "total wall time" in result.stdout
    pictures = sorted((tmp_path / "data_64" / "train" / "10_bench person").glob("*.png"))
    assert len(pictures) == 8 and all(p.with_suffix(".txt").is_file() for p in pictures)
