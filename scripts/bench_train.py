"""Training step time and memory: ours (`python -m train`, the path users run) against a textbook diffusers
+ peft LoRA step (scripts/bench_train_baseline.py), on the same model, data, ranks and precision.

    python scripts/bench_train.py                                   # the full CPU benchmark (sd15_arch)
    python scripts/bench_train.py --model tiny --resolutions 64 --steps 3 --warmup 1 --skip-toy
    python scripts/bench_train.py --device cuda --resolutions 512 --batch 8 --precisions best
    python scripts/bench_train.py --model tiny_sdxl --resolutions 256 512 --skip-toy      # SDXL on a CPU
    python scripts/bench_train.py --model sdxl_arch --device cuda --resolutions 1024 --precisions best --skip-toy
    python scripts/bench_train.py --resolutions 256 --precisions fp32 --skip-toy --rounds 2   # a noisy machine

Every measurement runs in a fresh child process, so its peak RSS (from os.wait4) is its own. Ours' per-step
seconds come from the run's metrics.jsonl (`time/step`, `memory/peak_vram_gib`); the baseline child
times its own steps, both including data loading. Medians (and the fastest step, the least disturbed on a
shared machine) are over the steps after the warm-up. Utilisation = the step's UNet + text encoder FLOPs
(counted once per configuration with FlopCounterMode) / (s/step) / a 2048² matmul's rate.
Ours caches latents (`dataset.cache_latents=true`, kohya's usual setting; `--no-cache-latents` turns it
off); the baseline encodes every batch with the VAE, as the diffusers example does.
Both sides train kohya's layer set (network=lora: the UNet's transformer-block Linear / 1x1 layers and every
text encoder's attention and MLP, at dim / alpha RANK); on SDXL (`--model tiny_sdxl|sdxl_arch`) that is both
text encoders, and the baseline is train_text_to_image_lora_sdxl's step (scripts/bench_train_baseline_sdxl.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data.toy import world
from train.precision import cpu_has_native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the table, beside this file

from bench_train_table import print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "scripts" / "bench_train_baseline.py"
MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
RANK = (16, 8.0)  # network.dim / network.alpha of the SD-size rows
TOY = {"resolution": 64, "batch": 16, "rank": (8, 8.0), "conv": (8, 8.0)}  # what +experiment=char_lora sets
CHILD_TIMEOUT_S = 3 * 3600


@dataclass
class Measurement:
    """One child's result: seconds of each timed step, peak RSS / VRAM in GiB, FLOPs of one step."""

    step_seconds: list[float] = field(default_factory=list)
    rss_gib: float | None = None
    vram_gib: float | None = None
    flops: float | None = None
    error: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.step_seconds) if self.step_seconds else None

    @property
    def fastest_s(self) -> float | None:
        """The quickest timed step: on a shared machine, the closest to the unloaded speed."""
        return min(self.step_seconds) if self.step_seconds else None


@dataclass
class Row:
    """One configuration, measured for ours and for the baseline."""

    model: str
    resolution: int
    batch: int
    precision: str
    toy: bool = False
    ours: Measurement = field(default_factory=Measurement)
    baseline: Measurement = field(default_factory=Measurement)
    flops: float | None = None  # UNet + text encoder, forward and backward, of one step

    @property
    def label(self) -> str:
        name = "toy char_lora" if self.toy else self.model
        return f"{name} {self.resolution}px b{self.batch} {self.precision}"

    @property
    def key(self) -> str:
        return self.label.replace(" ", "_")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def resolve_precisions(wanted: list[str], device: str) -> list[str]:
    """`best` → bf16 on CUDA if supported else fp16; on CPU bf16 only where native, else dropped (said why)."""
    chosen = []
    for name in wanted:
        if name == "best" and device == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif name == "best":
            if not cpu_has_native_bf16():
                print("no native bf16 on this CPU: fp32 is the best precision here")
                continue
            name = "bf16"
        if name not in chosen:
            chosen.append(name)
    return chosen


def child_env(device: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # ours would pick the GPU otherwise
    return env


def run_child(command: list[str], device: str, log_path: Path, stderr_to_log: bool) -> tuple[int, float]:
    """Run `command`; its exit code and its own peak RSS in GiB (os.wait4's ru_maxrss, KiB on Linux)."""
    with log_path.open("w") as out:
        stderr = out if stderr_to_log else None  # the baseline's stage lines go straight to our stderr
        proc = subprocess.Popen(command, cwd=REPO, env=child_env(device), stdout=out, stderr=stderr)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return proc.returncode, usage.ru_maxrss / 2**20


def tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(line.strip()[-200:] for line in text[-lines:]) or "(no output)"


def ours_overrides(args: argparse.Namespace, row: Row, data: Path | None) -> list[str]:
    """The `python -m train` overrides of one row: the toy experiment, or the folders dataset."""
    common = [
        f"training.max_train_steps={args.warmup + args.steps}",
        f"training.mixed_precision={MIXED[row.precision]}",
        "logger=none",
        "eval.enabled=false",
    ]
    if row.toy:
        return ["+experiment=char_lora", *common]
    return [
        f"model={row.model}",
        "network=lora",
        f"network.dim={RANK[0]}",
        f"network.alpha={RANK[1]}",
        "dataset=folders",
        f"dataset.train_dir='{data}'",  # quoted: Hydra's grammar then takes any path
        f"dataset.resolution={row.resolution}",
        f"dataset.cache_latents={str(not args.no_cache_latents).lower()}",
        f"training.batch_size={row.batch}",
        *common,
    ]


def step_metrics(metrics: Path, warmup: int) -> tuple[list[float], float | None]:
    """Per-step seconds after the warm-up (`time/step`) and the largest `memory/peak_vram_gib` of a run."""
    times, vram = [], None
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        record = json.loads(line)
        if "time/step" in record and record.get("step", 0) > warmup:
            times.append(float(record["time/step"]))
        if "memory/peak_vram_gib" in record:
            vram = max(vram or 0.0, float(record["memory/peak_vram_gib"]))
    return times, vram


def measure_ours(
    args: argparse.Namespace, row: Row, data: Path | None, work: Path, round_index: int = 0
) -> Measurement:
    """One `python -m train` run in a child; its step times from metrics.jsonl, its peak RSS."""
    run_dir = work / (f"ours_{row.key}" + (f"_round{round_index + 1}" if round_index else ""))
    command = [sys.executable, "-m", "train", *ours_overrides(args, row, data), f"hydra.run.dir='{run_dir}'"]
    log(f"ours {row.label}: python -m train ... (output in {run_dir}.log)")
    start = time.perf_counter()
    code, rss = run_child(command, args.device, Path(f"{run_dir}.log"), stderr_to_log=True)
    if code != 0:
        log(f"ours {row.label}: FAILED (exit {code}): {tail(Path(f'{run_dir}.log'))}")
        return Measurement(error=f"exit {code}")
    times, vram = step_metrics(run_dir / "metrics.jsonl", args.warmup)
    note = f"{len(times)} timed steps" if times else "no time/step in metrics.jsonl: times missing"
    log(f"ours {row.label}: done in {time.perf_counter() - start:.0f} s, {note}")
    return Measurement(step_seconds=times, rss_gib=rss, vram_gib=vram)


def measure_baseline(
    args: argparse.Namespace, row: Row, data: Path, work: Path, flops: bool, round_index: int = 0
) -> Measurement:
    """The textbook diffusers + peft step in a child; its step times, peak RSS and VRAM, FLOPs."""
    rank, conv = (TOY["rank"], TOY["conv"]) if row.toy else (RANK, (0, 1.0))
    command = [sys.executable, str(BASELINE), "--model", "toy" if row.toy else row.model]
    command += ["--train-dir", str(data), "--resolution", str(row.resolution), "--batch", str(row.batch)]
    command += ["--precision", row.precision, "--device", args.device, "--dim", str(rank[0])]
    command += ["--alpha", str(rank[1]), "--conv-dim", str(conv[0]), "--conv-alpha", str(conv[1])]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)] + ["--count-flops"] * flops
    log(f"baseline {row.label}: diffusers + peft step")
    out = work / (f"baseline_{row.key}" + (f"_round{round_index + 1}" if round_index else "") + ".log")
    code, rss = run_child(command, args.device, out, stderr_to_log=False)
    results = [line[7:] for line in out.read_text().splitlines() if line.startswith("RESULT ")]
    if code != 0 or not results:
        log(f"baseline {row.label}: FAILED (exit {code}): {tail(out)}")
        return Measurement(error=f"exit {code}")
    result = json.loads(results[-1])
    return Measurement(
        step_seconds=result["step_seconds"][args.warmup :],
        rss_gib=rss,
        vram_gib=result["peak_vram_gib"],
        flops=result["flops"],
    )


def plan_rows(args: argparse.Namespace, precisions: list[str]) -> list[Row]:
    """Every configuration to measure: each resolution at each precision, then the toy lines."""
    rows = [Row(m, r, args.batch, p) for m in args.model for r in args.resolutions for p in precisions]
    if not args.skip_toy:
        rows += [Row("toy", TOY["resolution"], TOY["batch"], p, toy=True) for p in precisions]
    return rows


def pooled(first: Measurement, second: Measurement) -> Measurement:
    """Two runs of one engine as one measurement: their timed steps together, the larger peaks, the first
    FLOP count; an error in either stays."""
    if first.error or second.error:
        return first if first.error else second
    return Measurement(
        first.step_seconds + second.step_seconds, larger(first.rss_gib, second.rss_gib),
        larger(first.vram_gib, second.vram_gib), first.flops if first.flops is not None else second.flops,
    )  # fmt: skip


def larger(a: float | None, b: float | None) -> float | None:
    """The larger of two peaks, either of which may be missing."""
    return b if a is None else a if b is None else max(a, b)


def measure(args: argparse.Namespace, rows: list[Row], work: Path) -> None:
    """Fill each row's ours / baseline measurements; FLOPs are counted in the first baseline of a size.

    With --rounds N each engine runs N times, in the order ours, baseline, baseline, ours, ... (each
    engine's mean position the same, so a machine that slows down or speeds up over the run favours
    neither), and a row's steps are pooled over its runs."""
    counted: set[tuple] = set()
    for row in rows:
        data = work / f"data_{row.resolution}" / "train"
        if not data.exists():
            write_pictures(data / "10_bench person", row.resolution)
        for round_index in range(args.rounds):
            engines = ("ours", "baseline") if round_index % 2 == 0 else ("baseline", "ours")
            for engine in engines:
                if engine == "ours":
                    if args.only == "baseline":
                        row.ours.error = "not run"
                        continue
                    run = measure_ours(args, row, data, work, round_index)
                    row.ours = run if round_index == 0 else pooled(row.ours, run)
                    continue
                if args.only == "ours":
                    row.baseline.error = "not run"
                    continue
                size = (row.model, row.resolution, row.batch)
                run = measure_baseline(args, row, data, work, size not in counted, round_index)
                if run.flops is not None:
                    counted.add(size)
                row.baseline = run if round_index == 0 else pooled(row.baseline, run)
    flops = {(r.model, r.resolution, r.batch): r.baseline.flops for r in rows if r.baseline.flops}
    for row in rows:
        row.flops = flops.get((row.model, row.resolution, row.batch))


def write_pictures(folder: Path, resolution: int, count: int = 8, seed: int = 0) -> None:
    """`count` toy-world scenes (data/toy/world.py) of `resolution`² px, with .txt captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        scene = world.sample_scene(rng)
        world.render(scene, resolution).save(folder / f"{index:03d}.png")
        caption = f"bench person, {world.caption(scene)}"
        (folder / f"{index:03d}.txt").write_text(caption + "\n", encoding="utf-8")


def matmul_gflops(device: str, precision: str, size: int = 2048, seconds: float = 0.5) -> float:
    """The rate of a size² matmul in GFLOP/s (fp32 on CPU, the precision's dtype on CUDA), over ~`seconds`."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    dtype = dtype if device == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(repeats: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        return time.perf_counter() - start

    timed(1)  # warm-up: thread pools, cuBLAS handles
    once = timed(1)
    repeats = min(1000, max(3, int(seconds / once)))
    return 2 * size**3 * repeats / timed(repeats) / 1e9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512], help="square side, px")
    parser.add_argument("--steps", type=int, default=10, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--precisions", nargs="+", choices=("fp32", "bf16", "fp16", "best"), default=["fp32", "best"]
    )
    parser.add_argument(
        "--model", nargs="+", choices=("sd15_arch", "tiny", "tiny_sdxl", "sdxl_arch"), default=["sd15_arch"]
    )
    parser.add_argument("--skip-toy", action="store_true", help="leave out the char_lora toy-size line")
    parser.add_argument("--only", choices=("ours", "baseline"), default=None)
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each engine, alternated (ours, base, base, ours, ...)"
    )
    parser.add_argument("--no-cache-latents", action="store_true", help="ours encodes every batch too")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp one)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    precisions = resolve_precisions(args.precisions, args.device)
    rows = plan_rows(args, precisions)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as temp:
        work = args.keep or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        measure(args, rows, work)
    rates = {p: matmul_gflops(args.device, p) for p in precisions}  # after the children: an idle machine
    print_table(rows, rates, args, RANK)
    print(f"total wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
