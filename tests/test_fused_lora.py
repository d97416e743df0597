"""The fused LoRA forward (train/network/fused_lora.py) computes what peft computes, gradients included, and
steps aside wherever the call is not peft's plain case."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from train.network.fused_lora import fuse_lora_layers, unfuse_lora_layers


class Small(nn.Module):
    """A Linear on (B, H, W, C) tokens, a 3x3 and a 1x1 convolution, and a Linear without bias."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 48)
        self.conv = nn.Conv2d(48, 16, 3, padding=1)
        self.pointwise = nn.Conv2d(16, 16, 1, bias=False)
        self.head = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        y = self.lin(x).permute(0, 3, 1, 2).contiguous()
        y = self.pointwise(self.conv(y))
        return self.head(y.permute(0, 2, 3, 1))


def adapted(alpha: float = 6.0) -> nn.Module:
    torch.manual_seed(0)
    model = Small()
    model.requires_grad_(False)
    config = LoraConfig(r=4, lora_alpha=alpha, target_modules=["lin", "conv", "pointwise", "head"])
    inject_adapter_in_model(config, model, adapter_name="a")
    for name, param in model.named_parameters():
        if "lora_" in name:  # up-weights start at 0; give both factors values so every gradient shows
            param.requires_grad_(True)
            nn.init.normal_(param, std=0.3)
    return model


def outputs_and_gradients(model: nn.Module, x: torch.Tensor):
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


def graph_nodes(out: torch.Tensor) -> set[str]:
    """The names of the autograd nodes `out` was computed through."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node.name() not in seen:
            seen.add(node.name())
            todo += [parent for parent, _ in node.next_functions]
    return seen


def test_fused_layers_match_peft_in_value_and_every_gradient():
    model = adapted()
    x = torch.randn(2, 5, 5, 32)
    expected = outputs_and_gradients(model, x)
    assert fuse_lora_layers(model) == 4
    nodes = graph_nodes(model(x))
    # the convolutions add in place (CopySlices); no scale or sum over whole outputs is left
    assert {"FusedLoRALinearBackward", "torch::autograd::CopySlices"} <= nodes and "MulBackward0" not in nodes
    got = outputs_and_gradients(model, x)
    # The same sums in another order: float32 rounding, far below any training signal.
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-4)
    assert got[2].keys() == expected[2].keys() and len(got[2]) == 8
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], rtol=1e-5, atol=1e-3, msg=name)


def test_fused_steps_are_deterministic():
    model = adapted()
    fuse_lora_layers(model)
    x = torch.randn(2, 5, 5, 32)
    first, second = outputs_and_gradients(model, x), outputs_and_gradients(model, x)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert all(torch.equal(first[2][n], second[2][n]) for n in first[2])


def test_unfusing_restores_peft_bit_for_bit():
    model = adapted()
    x = torch.randn(2, 5, 5, 32)
    expected = outputs_and_gradients(model, x)
    fuse_lora_layers(model)
    unfuse_lora_layers(model)
    got = outputs_and_gradients(model, x)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("case", ["hook on down", "adapters disabled", "float64"])
def test_other_calls_run_peft_unchanged(case):
    model = adapted()
    x = torch.randn(2, 5, 5, 32)
    calls = []
    if case == "hook on down":  # kohya's dropouts hook the down projection (train/network/dropouts.py)
        model.lin.lora_A["a"].register_forward_hook(lambda *_: calls.append(1))
    if case == "adapters disabled":
        for layer in (model.lin, model.conv, model.pointwise, model.head):
            layer.enable_adapters(False)
    if case == "float64":
        model, x = model.double(), x.double()
    expected = outputs_and_gradients(model, x)
    fuse_lora_layers(model)
    got = outputs_and_gradients(model, x)
    if case == "hook on down":
        assert len(calls) == 2  # the hook ran in the fused model's call too
        torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_a_frozen_factor_gets_no_gradient():
    model = adapted()
    fuse_lora_layers(model)
    model.lin.lora_A["a"].weight.requires_grad_(False)
    _, _, grads = outputs_and_gradients(model, torch.randn(2, 5, 5, 32))
    assert "lin.lora_A.a.weight" not in grads and grads["lin.lora_B.a.weight"] is not None
