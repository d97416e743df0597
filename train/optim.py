"""Optimizer and learning-rate schedule from the config, with kohya's names and conventions."""

from __future__ import annotations

import math

import torch
from diffusers.optimization import get_scheduler

from train.config import OptimizerConfig, SchedulerConfig

FUSED_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}


def fused_option(groups: list[dict]) -> dict[str, bool]:
    """`fused=True` where every parameter allows it: one kernel updates them all. On a CPU torch's default
    is a Python loop over the tensors (a toy LoRA step: 11 ms of 133 ms, 1 ms fused)."""
    params = [p for group in groups for p in group["params"]]
    fits = all(p.dtype in FUSED_DTYPES.get(p.device.type, ()) for p in params)
    return {"fused": True} if params and fits else {}


def build_optimizer(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` over LoRA parameter groups (each carries its own lr)."""
    if cfg.name == "AdamW":
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
            **fused_option(groups),
        )  # fmt: skip
    raise ValueError(f"unknown optimizer {cfg.name}")  # validated earlier; kept for direct callers


def describe_optimizer(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig) -> str:
    """kohya's `ss_optimizer` form: `module.Class(key=value,...)`, e.g. `torch.optim.adamw.AdamW(...)`."""
    # accelerate's prepare() wraps the optimizer in AcceleratedOptimizer; the header names the real one.
    cls = type(getattr(optimizer, "optimizer", optimizer))
    args = f"weight_decay={cfg.weight_decay},betas={tuple(cfg.betas)},eps={cfg.eps}"
    return f"{cls.__module__}.{cls.__name__}({args})"


def warmup_steps(cfg: SchedulerConfig, total_steps: int) -> int:
    """Warmup in steps; a value below 1 is a fraction of all steps (kohya's `--lr_warmup_steps 0.1`)."""
    if 0 < cfg.warmup_steps < 1:
        return math.ceil(cfg.warmup_steps * total_steps)
    return int(cfg.warmup_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int, processes: int = 1
):
    """The learning-rate schedule over `total_steps` optimizer steps of each of `processes` processes.

    accelerate's scheduler wrapper steps the schedule once per process at every optimizer step, so its length
    counts every process's steps (kohya does the same).
    """
    return get_scheduler(
        cfg.name,
        optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps) * processes,
        num_training_steps=total_steps * processes,
        num_cycles=cfg.num_cycles,
        power=cfg.power,
    )
