"""LyCORIS LoHa: each layer's change is the Hadamard product of two rank-`dim` products.

ΔW = (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b) · alpha / dim, so its rank reaches dim² for the
weights of two rank-dim LoRAs. Shapes as LyCORIS writes them: hada_w*_a (out, dim), hada_w*_b
(dim, in·k·k), the product reshaped to the weight (out, in[, k, k]). Initialised as LyCORIS does:
w1_b ~ N(0, 1), w1_a ~ N(0, 0.1²), w2_b ~ N(0, 1), w2_a = 0, so training starts from the base model.
Tucker factors (LyCORIS use_tucker) are not offered.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from train.network.delta_layer import WeightDelta
from train.network.lycoris_network import LycorisNetwork


class LohaDelta(WeightDelta):
    """The four LoHa factors of one layer whose weight is `shape`, at rank `dim` and scale alpha / dim."""

    def __init__(self, shape: tuple[int, ...], dim: int, alpha: float):
        super().__init__()
        out, columns = shape[0], math.prod(shape[1:])
        self.shape = shape
        self.hada_w1_a = nn.Parameter(torch.empty(out, dim))
        self.hada_w1_b = nn.Parameter(torch.empty(dim, columns))
        self.hada_w2_a = nn.Parameter(torch.empty(out, dim))
        self.hada_w2_b = nn.Parameter(torch.empty(dim, columns))
        with torch.no_grad():  # LyCORIS's order of draws
            nn.init.normal_(self.hada_w1_b, std=1.0)
            nn.init.normal_(self.hada_w1_a, std=0.1)
            nn.init.normal_(self.hada_w2_b, std=1.0)
            nn.init.zeros_(self.hada_w2_a)
        self.alpha = float(alpha)
        self.scale = self.alpha / dim

    def weight_change(self) -> Tensor:
        """(w1_a @ w1_b) ⊙ (w2_a @ w2_b), shaped like the weight."""
        first = self.hada_w1_a @ self.hada_w1_b
        second = self.hada_w2_a @ self.hada_w2_b
        return (first * second).reshape(self.shape)


class LohaNetwork(LycorisNetwork):
    """`network.module=loha`: LyCORIS `--network_args algo=loha`."""

    algo = "loha"

    def make_delta(self, shape: tuple[int, ...], dim: int, alpha: float) -> LohaDelta:
        return LohaDelta(shape, dim, alpha)
