"""LyCORIS LoHa: each layer's change is the Hadamard product of two rank-`dim` products.

ΔW = (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b) · alpha / dim, so its rank reaches dim² for the
weights of two rank-dim LoRAs. Shapes as LyCORIS writes them: hada_w*_a (out, dim), hada_w*_b
(dim, in·k·k), the product reshaped to the weight (out, in[, k, k]). Initialised as LyCORIS does:
w1_b ~ N(0, 1), w1_a ~ N(0, 0.1²), w2_b ~ N(0, 1), w2_a = 0, so training starts from the base model.

With use_tucker (LyCORIS's Tucker/CP form, 3x3 convolutions only) each product is a core hada_t*
(dim, dim, k, k) ~ N(0, 0.1²) joined to hada_w*_a (dim, out) and hada_w*_b (dim, in).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from train.network.delta_layer import WeightDelta, tucker_product
from train.network.lycoris_network import LycorisNetwork


class HadamardProduct(torch.autograd.Function):
    """(w1_a @ w1_b) ⊙ (w2_a @ w2_b) that keeps only the four factors for the backward pass and computes the
    two full-size products again there (as LyCORIS does): a layer's change holds no weight-sized memory
    between the forward and the backward pass."""

    @staticmethod
    def forward(ctx, w1_a: Tensor, w1_b: Tensor, w2_a: Tensor, w2_b: Tensor) -> Tensor:
        ctx.save_for_backward(w1_a, w1_b, w2_a, w2_b)
        return (w1_a @ w1_b) * (w2_a @ w2_b)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w1_a, w1_b, w2_a, w2_b = ctx.saved_tensors
        grad_first = grad * (w2_a @ w2_b)
        grad_second = grad * (w1_a @ w1_b)
        return grad_first @ w1_b.T, w1_a.T @ grad_first, grad_second @ w2_b.T, w2_a.T @ grad_second


class LohaDelta(WeightDelta):
    """The LoHa factors of one layer whose weight is `shape`, at rank `dim` and scale alpha / dim."""

    def __init__(self, shape: tuple[int, ...], dim: int, alpha: float, use_tucker: bool = False):
        super().__init__()
        out, columns, kernel = shape[0], math.prod(shape[1:]), shape[2:]
        self.shape = shape
        self.tucker = use_tucker and any(k != 1 for k in kernel)
        if self.tucker:
            self.hada_t1 = nn.Parameter(torch.empty(dim, dim, *kernel))
            self.hada_t2 = nn.Parameter(torch.empty(dim, dim, *kernel))
            a_shape, b_shape = (dim, out), (dim, shape[1])
        else:
            a_shape, b_shape = (out, dim), (dim, columns)
        self.hada_w1_a = nn.Parameter(torch.empty(a_shape))
        self.hada_w1_b = nn.Parameter(torch.empty(b_shape))
        self.hada_w2_a = nn.Parameter(torch.empty(a_shape))
        self.hada_w2_b = nn.Parameter(torch.empty(b_shape))
        with torch.no_grad():  # LyCORIS's order of draws
            if self.tucker:
                nn.init.normal_(self.hada_t1, std=0.1)
                nn.init.normal_(self.hada_t2, std=0.1)
            nn.init.normal_(self.hada_w1_b, std=1.0)
            nn.init.normal_(self.hada_w1_a, std=0.1)
            nn.init.normal_(self.hada_w2_b, std=1.0)
            nn.init.zeros_(self.hada_w2_a)
        self.alpha = float(alpha)
        self.scale = self.alpha / dim

    def weight_change(self) -> Tensor:
        """(w1_a @ w1_b) ⊙ (w2_a @ w2_b) (or their Tucker forms), shaped like the weight."""
        if not self.tucker:
            factors = (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a, self.hada_w2_b)
            return HadamardProduct.apply(*factors).reshape(self.shape)
        first = tucker_product(self.hada_t1, self.hada_w1_a, self.hada_w1_b)
        second = tucker_product(self.hada_t2, self.hada_w2_a, self.hada_w2_b)
        return first * second


class LohaNetwork(LycorisNetwork):
    """`network.module=loha`: LyCORIS `--network_args algo=loha`."""

    algo = "loha"

    def make_delta(self, shape: tuple[int, ...], dim: int, alpha: float) -> LohaDelta:
        return LohaDelta(shape, dim, alpha, self.cfg.use_tucker)
