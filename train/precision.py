"""Which dtype the frozen base model is held in, and what the device can really compute fast.

kohya's `weight_dtype`: with `training.mixed_precision=fp16|bf16` the frozen UNet, text encoder and VAE are
held in that dtype and only the trained LoRA weights stay fp32 (`full_fp16` / `full_bf16` put those in half
precision too). On a CPU, half precision only pays where the processor computes it natively: elsewhere a
bf16 matrix product runs hundreds of times slower than fp32, so such a run computes in fp32 and says so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from train.config import TrainingConfig

log = logging.getLogger(__name__)

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """What this run computes in: `mixed_precision` as accelerate takes it, and the frozen weights' dtype."""

    mixed_precision: str  # "no" | "fp16" | "bf16" (after any fallback)
    weight_dtype: torch.dtype  # the frozen UNet / text encoder / VAE
    trained_dtype: torch.dtype  # the LoRA weights (fp32 unless full_fp16 / full_bf16)
    note: str = ""  # why the requested precision was changed, if it was

    @property
    def is_half(self) -> bool:
        return self.weight_dtype != torch.float32


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), as oneDNN reports."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_precision(cfg: TrainingConfig, device: torch.device) -> Precision:
    """The precision a run on `device` uses for `cfg`: the requested one where the hardware supports it."""
    requested = cfg.mixed_precision
    if requested == "no":
        return Precision("no", torch.float32, torch.float32)
    fallback = _cpu_fallback(requested) if device.type == "cpu" else ""
    if fallback:
        return Precision("no", torch.float32, torch.float32, note=fallback)
    dtype = HALF_DTYPES[requested]
    trained = dtype if (cfg.full_fp16 or cfg.full_bf16) else torch.float32
    return Precision(requested, dtype, trained)


def _cpu_fallback(requested: str) -> str:
    """Why `requested` half precision is not used on this CPU ("" when it is)."""
    if requested == "fp16":
        return (
            "training.mixed_precision=fp16 needs a CUDA GPU (a CPU has no fast fp16 and no loss scaling): "
            "this run computes in fp32"
        )
    if not cpu_has_native_bf16():
        return (
            "training.mixed_precision=bf16: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 is far "
            "slower than fp32: this run computes in fp32"
        )
    return ""


def announce(precision: Precision) -> None:
    """Say once why the requested precision was not used."""
    if precision.note:
        log.warning(precision.note)


def allow_fp16_gradients(scaler) -> None:
    """full_fp16: the LoRA's own gradients are fp16, which GradScaler refuses to unscale unless told (kohya's
    patch of the same method): unscaling in place is exact for the power-of-two scales it uses."""
    unscale = scaler._unscale_grads_

    def unscale_allowing_fp16(optimizer, inv_scale, found_inf, allow_fp16):  # noqa: ARG001
        return unscale(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale_allowing_fp16
