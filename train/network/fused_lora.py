"""A cheaper training step for peft's LoRA layers on a CPU: the same sum, in fewer and larger operations.

peft's layer computes `base(x) + up(down(x)) * scale`: per layer five operations in the forward pass and,
through autograd, about a dozen in the backward, three of them over the whole output (the scale, the sum
and its gradient). On a CPU, where each operation costs a fixed few microseconds on top of its arithmetic,
these dominate small layers. Here:

- a Linear computes `y = x Wᵀ + b`, then adds `scale · h upᵀ` (h = x downᵀ) into y inside one matrix
  product (`addmm_`), and its backward is written out (`FusedLoRALinear`): five matrix products, no
  full-size elementwise pass;
- a convolution adds `scale · up · h` (h = down(x), the rank-r map) into the base output with one batched
  product (`baddbmm_`) instead of a 1x1 convolution, a scale and a sum.

The result equals peft's up to float rounding (the scale is applied inside the product); it is
deterministic, so a seeded run repeats and a resumed run continues to the same bytes. A layer whose call
differs from the plain case (adapters disabled or merged, another dtype, autocast, a hook on `down` such as
kohya's dropouts, peft's own variants) runs peft's forward unchanged.
"""

from __future__ import annotations

import types

import torch
from peft.tuners.lora.layer import Conv2d as PeftConv2d
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn


class FusedLoRALinear(torch.autograd.Function):
    """y = x Wᵀ + b + scale · (x downᵀ) upᵀ, with W and b frozen; gradients for x, down and up only."""

    @staticmethod
    def forward(ctx, x, weight, bias, down, up, scale: float):
        flat = x.reshape(-1, x.shape[-1])
        h = torch.mm(flat, down.t())
        y = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
        y.addmm_(h, up.t(), alpha=scale)
        ctx.save_for_backward(flat, h, weight, down, up)
        ctx.scale, ctx.input_shape = scale, x.shape
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        flat, h, weight, down, up = ctx.saved_tensors
        needs_x, _, _, needs_down, needs_up, _ = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_down = grad_up = None
        g_h = torch.mm(g, up).mul_(ctx.scale) if (needs_x or needs_down) else None
        if needs_x:
            grad_x = torch.mm(g, weight).addmm_(g_h, down).reshape(ctx.input_shape)
        if needs_down:
            grad_down = torch.mm(g_h.t(), flat)
        if needs_up:
            grad_up = torch.mm(g.t(), h).mul_(ctx.scale)
        return grad_x, None, None, grad_down, grad_up, None


def _plain_adapter(layer: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The one active adapter when this call is peft's plain case in fp32 without autocast, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if getattr(layer, "lora_bias", {}).get(name):  # peft's trained bias on up: not in this sum
        return None
    down, dropout = layer.lora_A[name], layer.lora_dropout[name]
    if down._forward_hooks or down._forward_pre_hooks or not isinstance(dropout, nn.Identity):
        return None
    base = layer.get_base_layer()
    if x.dtype != torch.float32 or base.weight.dtype != torch.float32 or down.weight.dtype != torch.float32:
        return None
    if torch.is_autocast_enabled(x.device.type):
        return None
    return name


def _linear_forward(self: PeftLinear, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _plain_adapter(self, x, args, kwargs)
    base = self.get_base_layer()
    # the base layer's own call is inlined below: a plain nn.Linear only, without hooks of its own
    plain = type(base) is nn.Linear and not (base._forward_hooks or base._forward_pre_hooks)
    if name is None or not plain or getattr(self, "fan_in_fan_out", False):
        return PeftLinear.forward(self, x, *args, **kwargs)
    down, up = self.lora_A[name].weight, self.lora_B[name].weight
    return FusedLoRALinear.apply(x, base.weight, base.bias, down, up, float(self.scaling[name]))


def _conv_forward(self: PeftConv2d, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _plain_adapter(self, x, args, kwargs)
    if name is None:
        return PeftConv2d.forward(self, x, *args, **kwargs)
    y = self.base_layer(x)
    h = self.lora_A[name](x)
    if not y.is_contiguous() or y.shape[2:] != h.shape[2:] or self.lora_B[name].kernel_size != (1, 1):
        return y + self.lora_B[name](h) * self.scaling[name]
    batch, channels = y.shape[:2]
    up = self.lora_B[name].weight.reshape(channels, -1)
    y.view(batch, channels, -1).baddbmm_(
        up.expand(batch, *up.shape), h.reshape(batch, h.shape[1], -1), alpha=float(self.scaling[name])
    )
    return y


def fuse_lora_layers(model: nn.Module) -> int:
    """Give `model`'s peft LoRA layers the fused forward (this module's docstring); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is PeftLinear:
            module.forward = types.MethodType(_linear_forward, module)
        elif type(module) is PeftConv2d:
            module.forward = types.MethodType(_conv_forward, module)
        else:
            continue
        count += 1
    return count


def unfuse_lora_layers(model: nn.Module) -> None:
    """Undo `fuse_lora_layers`: each layer runs peft's own forward again."""
    for module in model.modules():
        if isinstance(module, PeftLinear | PeftConv2d):
            vars(module).pop("forward", None)
