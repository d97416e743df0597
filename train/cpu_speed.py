"""Two measured speed-ups for fp32 training on a CPU (scripts/bench_train.py shows what each earns).

1. **The allocator keeps freed memory.** glibc gives every block above its mmap threshold back to the
   kernel when it is freed, so each step maps, page-faults and zeroes its activations afresh: on SD 1.5 at
   256 px a quarter of the process's CPU time went to the kernel. Raising the mmap and trim thresholds
   keeps those pages in the heap for the next step; the peak memory stays what it was.
2. **Some convolutions run as im2col + GEMM.** oneDNN copies a convolution's weight into its blocked
   layout on every call. Where the weight is large and the feature map small (the UNet's 1280-channel
   3x3 convolutions on 8x8 latents), that copy costs more than the arithmetic, and the plain im2col +
   matrix product is 2-4x faster; 1x1 convolutions (LoRA's own among them) are matrix products anyway.
   The choice is a fixed rule on shapes (`uses_gemm`), never a timing, so a run repeats and resumes to
   the same bytes.

Both apply to fp32 training on the CPU only; GPU runs and half precision are left as they are.
"""

from __future__ import annotations

import ctypes
import sys
import types

import torch
from torch import nn

# A convolution goes through im2col + GEMM when its weight has more elements than this per output pixel:
# then oneDNN's per-call weight copy outweighs its faster kernel (measured on SD 1.5's convolutions on
# AVX2 and AVX-512 CPUs; the cross-over lies between 29k and 43k).
GEMM_WEIGHT_PER_PIXEL = 32768

# glibc's mallopt parameters (malloc.h) and the values used here.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the heap and stay there
_TRIM_THRESHOLD = 2**30  # free heap at the top is returned only beyond 1 GiB
_TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks (up to 32 MiB each) for reuse; False where the C library is not glibc.

    `model_setup.release_memory()` (malloc_trim) still returns memory explicitly when a model is freed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        )
        return all(libc.mallopt(option, value) == 1 for option, value in settings)
    except (OSError, AttributeError):  # musl and others: no libc.so.6 or no mallopt
        return False


def uses_gemm(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this call of `conv` runs as im2col + GEMM (torch's own path otherwise, oneDNN on x86).

    1x1 convolutions are plain matrix products: oneDNN's fixed cost per call (~0.1-0.2 ms with the backward)
    is larger than the product on small maps, and no slower than GEMM on large ones. Larger kernels go
    through GEMM when the weight is frozen and large for the batch's output (`GEMM_WEIGHT_PER_PIXEL`): the
    GEMM path reads the weight once per picture, oneDNN copies it once per call, so the batch counts.
    """
    if x.device.type != "cpu" or weight.dtype != torch.float32 or x.dim() != 4:
        return False
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return True
    if weight.requires_grad:  # a trained (LoCon) kernel: oneDNN's fused weight gradient is faster
        return False
    out_h = (x.shape[2] + 2 * ph - kh) // sh + 1
    out_w = (x.shape[3] + 2 * pw - kw) // sw + 1
    return weight.numel() > GEMM_WEIGHT_PER_PIXEL * max(x.shape[0] * out_h * out_w, 1)


def _routed_conv_forward(self: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if uses_gemm(self, x, weight):
        return torch._C._nn.thnn_conv2d(x, weight, self.kernel_size, bias, self.stride, self.padding)
    return nn.Conv2d._conv_forward(self, x, weight, bias)


def _routable(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def route_large_convs(model: nn.Module) -> int:
    """Let `model`'s plain convolutions choose im2col + GEMM call by call (`uses_gemm`); returns how many."""
    convs = [m for m in model.modules() if _routable(m)]
    for conv in convs:
        conv._conv_forward = types.MethodType(_routed_conv_forward, conv)
    return len(convs)


def unroute_convs(model: nn.Module) -> None:
    """Undo `route_large_convs`: every convolution calls torch's own path again (evaluation renders)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and "_conv_forward" in vars(module):
            del module._conv_forward


def speed_up_cpu_training(unet: nn.Module) -> None:
    """Both speed-ups for a run that computes in fp32 on the CPU."""
    keep_freed_memory()
    route_large_convs(unet)
