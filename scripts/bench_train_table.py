"""The table that scripts/bench_train.py prints: per configuration ours, the baseline and their ratios (below 1:
ours is faster or lighter), with each step's model-FLOPs utilisation against a large matmul's rate."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from bench_train import Measurement, Row


def shown(value: float | None, spec: str, width: int) -> str:
    return f"{'missing':>{width}s}" if value is None else f"{value:{width}{spec}}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def utilisation(flops: float | None, seconds: float | None, rate_gflops: float) -> float | None:
    """Share of the matmul rate that the step's model FLOPs reach, in %."""
    if flops is None or not seconds:
        return None
    return 100 * flops / seconds / (rate_gflops * 1e9)


def engine_line(name: str, m: Measurement, row: Row, rate: float, cuda: bool) -> str:
    it_s = 1 / m.median_s if m.median_s else None
    line = f"  {name:9s} {shown(m.median_s, '.3f', 9)} {shown(it_s, '.3f', 8)} {shown(m.fastest_s, '.3f', 8)}"
    line += f" {shown(m.rss_gib, '.2f', 8)}"
    if cuda:
        line += f" {shown(m.vram_gib, '.2f', 9)}"
    line += f" {shown(utilisation(row.flops, m.median_s, rate), '.1f', 7)}"
    return line + (f"   ({m.error})" if m.error else "")


def ratio_line(row: Row, cuda: bool) -> str:
    o, b = row.ours, row.baseline
    line = f"  {'ours/base':9s} {shown(ratio(o.median_s, b.median_s), '.3f', 9)} {'':8s}"
    line += f" {shown(ratio(o.fastest_s, b.fastest_s), '.3f', 8)}"
    line += f" {shown(ratio(o.rss_gib, b.rss_gib), '.3f', 8)}"
    return line + (f" {shown(ratio(o.vram_gib, b.vram_gib), '.3f', 9)}" if cuda else "")


def runs_of(args: argparse.Namespace) -> str:
    """`2 runs x ` with --rounds 2, else nothing."""
    return f"{args.rounds} runs x " if args.rounds > 1 else ""


def print_table(
    rows: list[Row], rates: dict[str, float], args: argparse.Namespace, rank: tuple[int, float]
) -> None:
    """Per configuration: ours, the baseline and their ratios (time and memory; below 1 = ours better)."""
    cuda = args.device == "cuda"
    where = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} torch threads"
    print(f"\ntraining step, ours (python -m train) vs diffusers + peft, on {where}")
    print(f"LoRA dim {rank[0]} alpha {rank[1]:g}; toy: char_lora's dim 8 alpha 8, conv 8/8; "
          f"median and fastest of {runs_of(args)}{args.steps} steps after {args.warmup} warm-up (s); "
          "peak RSS / VRAM in GiB")  # fmt: skip
    for precision, rate in rates.items():
        kind = precision if cuda else "fp32"
        print(f"matmul 2048x2048 {kind} (for {precision} rows): {rate:.1f} GFLOP/s")
    head = f"  {'engine':9s} {'s/step':>9s} {'it/s':>8s} {'fastest':>8s} {'RSS':>8s}" + (
        f" {'VRAM':>9s}" if cuda else ""
    )
    for row in rows:
        gflop = shown(row.flops / 1e9 if row.flops else None, ".1f", 0)
        print(f"\n{row.label}   (UNet + TE fwd+bwd: {gflop} GFLOP/step)")
        print(head + f" {'util %':>7s}")
        print(engine_line("ours", row.ours, row, rates[row.precision], cuda))
        print(engine_line("baseline", row.baseline, row, rates[row.precision], cuda))
        print(ratio_line(row, cuda))
