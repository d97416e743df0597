"""The CPU speed-ups of train/cpu_speed.py: same numbers as torch's own convolution, chosen by a fixed rule."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from train.cpu_speed import keep_freed_memory, route_large_convs, unroute_convs, uses_gemm

# im2col + GEMM and oneDNN sum in different orders: fp32 agreement to a few ulps of the output's scale.
RTOL, ATOL = 1e-5, 1e-5


def _conv(cin: int, cout: int, k: int, stride: int = 1, frozen: bool = True) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    return conv.requires_grad_(not frozen)


def _output_and_grads(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_(True)
    out = conv(x)
    wanted = [x] + [p for p in conv.parameters() if p.requires_grad]
    return out.detach(), torch.autograd.grad(out, wanted, grad)


@pytest.mark.parametrize(
    "cin, cout, k, stride, batch, size, frozen",
    [
        (256, 256, 3, 1, 1, 4, True),  # a large frozen kernel on a tiny map: GEMM
        (256, 256, 3, 2, 1, 8, True),  # a strided downsampler: GEMM
        (64, 32, 1, 1, 2, 8, True),  # 1x1: GEMM
        (8, 64, 1, 1, 4, 8, False),  # a trained 1x1 (LoRA up): GEMM, weight gradient included
    ],
)
def test_routed_convolution_matches_torch(cin, cout, k, stride, batch, size, frozen):
    conv = _conv(cin, cout, k, stride, frozen)
    x = torch.randn(batch, cin, size, size)
    grad = torch.randn_like(conv(x))
    expected, expected_grads = _output_and_grads(conv, x, grad)
    route_large_convs(conv)
    assert uses_gemm(conv, x, conv.weight)
    out, grads = _output_and_grads(conv, x, grad)
    assert torch.allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert len(grads) == len(expected_grads)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, rtol=RTOL, atol=ATOL * want.abs().max().item())
    assert conv(x.requires_grad_(True)).grad_fn.name() == "SlowConv2DBackward0"  # the GEMM path ran


def test_the_rule_keeps_onednn_where_it_is_faster():
    big_map = _conv(64, 64, 3)
    assert not uses_gemm(big_map, torch.zeros(1, 64, 32, 32), big_map.weight)  # small weight, large map
    large = _conv(256, 256, 3)  # 590k weights
    assert uses_gemm(large, torch.zeros(1, 256, 4, 4), large.weight)
    assert not uses_gemm(large, torch.zeros(8, 256, 4, 4), large.weight)  # a batch of 8 pays the copy once
    trained = _conv(256, 8, 3, frozen=False)  # a LoCon down kernel
    assert not uses_gemm(trained, torch.zeros(1, 256, 4, 4), trained.weight)
    half = _conv(256, 256, 3).to(torch.bfloat16)
    assert not uses_gemm(half, torch.zeros(1, 256, 4, 4, dtype=torch.bfloat16), half.weight)


def test_unrouted_convolutions_are_torch_exactly_and_unroute_restores():
    conv = _conv(16, 16, 3)
    x = torch.randn(1, 16, 16, 16)
    expected = conv(x)
    route_large_convs(conv)
    assert not uses_gemm(conv, x, conv.weight)
    assert torch.equal(conv(x), expected)  # the same call as before: bit for bit
    big = _conv(256, 256, 3)
    route_large_convs(big)
    unroute_convs(big)
    assert "_conv_forward" not in vars(big)
    x = torch.randn(1, 256, 4, 4, requires_grad=True)
    assert big(x).grad_fn.name() == "ConvolutionBackward0"  # torch's own path again


def test_only_plain_convolutions_are_routed():
    model = nn.Sequential(_conv(8, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, dilation=2))
    assert route_large_convs(model) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
