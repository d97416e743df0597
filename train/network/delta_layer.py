"""A frozen Linear or Conv2d whose weight gains `scale * ΔW` while training: the layer LoHa and LoKr train in.

The layer computes with W + scale * ΔW in one F.linear / convolution call, as LyCORIS does outside its
bypass mode. Our engine and A1111 add the same fp32 change to the weight when they load the saved file,
so the training-time output is the output of the patched base model. Convolutions go through the base
layer's own `_conv_forward`, which keeps its stride, padding, dilation, groups and padding mode.

LyCORIS's two dropouts for these algorithms (it has no plain `dropout` for them), drawn from torch's global
generator in its order, so a seeded run repeats and a resumed one continues exactly:
- module_dropout: with probability p the layer skips its change for this call;
- rank_dropout: each output row of ΔW is zeroed with probability p (LyCORIS does not rescale the rest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tucker_product(core: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
    """core (r, r, k, k) joined to w_a (r, out) and w_b (r, in): (out, in, k, k)."""
    return torch.einsum("ij...,jr,ip->pr...", core, w_b, w_a)


class WeightDelta(nn.Module):
    """One layer's trained factors; its parameters carry the LyCORIS key names (`hada_w1_a`, `lokr_w1`, …)."""

    alpha: float  # as the file records it
    scale: float  # what ΔW is multiplied by, as LyCORIS and A1111 apply it

    def weight_change(self) -> Tensor:
        """The unscaled ΔW, shaped like the base weight: (out, in) or (out, in, k, k)."""
        raise NotImplementedError


class DeltaLayer(nn.Module):
    """`base` (frozen) with `delta` added to its weight; in training mode the LyCORIS dropouts apply."""

    def __init__(
        self, base: nn.Linear | nn.Conv2d, delta: WeightDelta, rank_dropout: float, module_dropout: float
    ):
        super().__init__()
        self.base = base
        self.delta = delta
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout

    def weight(self) -> Tensor:
        """W + scale * ΔW, with rank dropout applied to ΔW's rows in training mode."""
        change = self.delta.weight_change()
        if self.training and self.rank_dropout:
            keep = (torch.rand(change.shape[0]) > self.rank_dropout).to(change.dtype)
            change = change * keep.view(-1, *[1] * (change.dim() - 1)).to(change.device)
        return self.base.weight + change * self.delta.scale

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.module_dropout and float(torch.rand(1)) < self.module_dropout:
            return self.base(x)
        if isinstance(self.base, nn.Conv2d):
            return self.base._conv_forward(x, self.weight(), self.base.bias)
        return F.linear(x, self.weight(), self.base.bias)
