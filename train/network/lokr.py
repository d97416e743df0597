"""LyCORIS LoKr: each layer's change is the Kronecker product of a small and a large factor.

A weight (out, in[, k, k]) splits as out = a·b and in = c·d (`factorization`, LyCORIS's rule); then
ΔW = kron(w1 (a, c), w2 (b, d[, k, k])) · scale. As LyCORIS builds the factors:
- w1 is `lokr_w1` (a, c), or with decompose_both, when dim < max(a, c) / 2, `lokr_w1_a` (a, dim) @
  `lokr_w1_b` (dim, c);
- w2 is `lokr_w2_a` (b, dim) @ `lokr_w2_b` (dim, d·k·k) when dim < max(b, d) / 2, else the full `lokr_w2`
  (b, d[, k, k]) (a rank that large would cost more than the full factor);
- full_matrix makes both factors full whatever dim says.
scale = alpha / dim, except when both factors are full: then LyCORIS records alpha = dim and the scale is 1
(A1111 and our engine apply 1 too). Initialised as LyCORIS does: w2 (or w2_b) zero, the rest Kaiming-uniform,
so training starts from the base model. With use_tucker (3x3 convolutions, low-rank w2 only) w2 is a core
`lokr_t2` (dim, dim, k, k) joined to `lokr_w2_a` (dim, b) and `lokr_w2_b` (dim, d), as LyCORIS writes it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from train.network.delta_layer import WeightDelta, tucker_product
from train.network.lycoris_network import LycorisNetwork


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m·n = dimension and m <= n, as LyCORIS splits a LoKr weight's side.

    A factor > 0 that divides the dimension is taken as it is; otherwise m is the largest divisor not above
    the square root (and not above `factor` when one is given): 320 → (16, 20), 768 → (24, 32).
    """
    if factor > 0 and dimension % factor == 0:
        small, large = sorted((factor, dimension // factor))
        return small, large
    limit = dimension if factor < 0 else factor
    best = 1
    for m in range(2, dimension + 1):
        if m > limit:
            break
        if dimension % m:
            continue
        best = m
        if m >= dimension // m:
            break
    small, large = sorted((best, dimension // best))
    return small, large


def _kaiming(param: nn.Parameter) -> None:
    nn.init.kaiming_uniform_(param, a=math.sqrt(5))  # torch's Linear default, which LyCORIS uses


class LokrDelta(WeightDelta):
    """The LoKr factors of one layer whose weight is `shape` (see the module's docstring for the rules)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        dim: int,
        alpha: float,
        factor: int = -1,
        decompose_both: bool = False,
        full_matrix: bool = False,
        use_tucker: bool = False,
    ):
        super().__init__()
        self.shape = shape
        kernel = shape[2:]
        tucker = use_tucker and any(k != 1 for k in kernel)
        out_small, out_large = factorization(shape[0], factor)
        in_small, in_large = factorization(shape[1], factor)
        w1_low_rank = decompose_both and not full_matrix and dim < max(out_small, in_small) / 2
        w2_low_rank = not full_matrix and dim < max(out_large, in_large) / 2
        self.tucker = tucker and w2_low_rank
        if self.tucker:
            self.lokr_t2 = nn.Parameter(torch.empty(dim, dim, *kernel))
            self.lokr_w2_a = nn.Parameter(torch.empty(dim, out_large))
            self.lokr_w2_b = nn.Parameter(torch.empty(dim, in_large))
        elif w2_low_rank:
            self.lokr_w2_a = nn.Parameter(torch.empty(out_large, dim))
            self.lokr_w2_b = nn.Parameter(torch.empty(dim, in_large * math.prod(kernel)))
        else:
            self.lokr_w2 = nn.Parameter(torch.empty(out_large, in_large, *kernel))
        if w1_low_rank:
            self.lokr_w1_a = nn.Parameter(torch.empty(out_small, dim))
            self.lokr_w1_b = nn.Parameter(torch.empty(dim, in_small))
        else:
            self.lokr_w1 = nn.Parameter(torch.empty(out_small, in_small))
        with torch.no_grad():  # LyCORIS's order of draws: the large factor, then the small one
            if self.tucker:
                _kaiming(self.lokr_t2)
            if w2_low_rank:
                _kaiming(self.lokr_w2_a)
                nn.init.zeros_(self.lokr_w2_b)
            else:
                nn.init.zeros_(self.lokr_w2)
            for param in (self.lokr_w1_a, self.lokr_w1_b) if w1_low_rank else (self.lokr_w1,):
                _kaiming(param)
        both_full = not (w1_low_rank or w2_low_rank)
        self.alpha = float(dim) if both_full else float(alpha)
        self.scale = self.alpha / dim

    def _small(self) -> Tensor:
        return self.lokr_w1 if hasattr(self, "lokr_w1") else self.lokr_w1_a @ self.lokr_w1_b

    def _large(self) -> Tensor:
        if hasattr(self, "lokr_w2"):
            return self.lokr_w2
        if self.tucker:
            return tucker_product(self.lokr_t2, self.lokr_w2_a, self.lokr_w2_b)
        return self.lokr_w2_a @ self.lokr_w2_b

    def weight_change(self) -> Tensor:
        """kron(w1, w2), shaped like the weight (w1 gains 1x1 kernel axes when w2 is 4-D)."""
        small, large = self._small(), self._large()
        if large.dim() == 4:
            small = small[:, :, None, None]
        return torch.kron(small, large.contiguous()).reshape(self.shape)  # kron views its inputs


class LokrNetwork(LycorisNetwork):
    """`network.module=lokr`: LyCORIS `--network_args algo=lokr` with factor, decompose_both, full_matrix."""

    algo = "lokr"

    def make_delta(self, shape: tuple[int, ...], dim: int, alpha: float) -> LokrDelta:
        cfg = self.cfg
        return LokrDelta(shape, dim, alpha, cfg.factor, cfg.decompose_both, cfg.full_matrix, cfg.use_tucker)

    def network_args(self) -> dict[str, str]:
        """LyCORIS's args plus the factorisation: factor always, the two switches when on."""
        args = super().network_args() | {"factor": str(self.cfg.factor)}
        for key in ("decompose_both", "full_matrix"):
            if getattr(self.cfg, key):
                args[key] = "True"
        return args
