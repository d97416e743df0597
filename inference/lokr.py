"""LyCORIS LoKr layers: a Kronecker product of two factors, as A1111's Lora extension applies them.

Per layer: `lokr_w1` (o1, i1) or its low-rank pair `lokr_w1_a` (o1, r) / `lokr_w1_b` (r, i1); `lokr_w2`
(o2, i2[, k, k]) or `lokr_w2_a` (o2, r) / `lokr_w2_b` (r, i2·k·k), or with a Tucker core `lokr_t2`
(r, r, k, k), `lokr_w2_a` (r, o2) / `lokr_w2_b` (r, i2); optional `alpha`. The change is kron(w1, w2) with
out = o1·o2 and in = i1·i2. alpha / r applies only when a factor is low-rank (r from lokr_w2_b, else
lokr_w1_b); with both factors full the scale is 1, whatever alpha says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.lycoris import (
    LayerFormatError,
    alpha_scale,
    f32,
    fit_to_weight,
    low_rank_product,
    require,
    tucker_product,
)

PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha")


@dataclass(frozen=True)
class LokrModule:
    """One layer's LoKr tensors: each factor is either full (w1 / w2) or a low-rank pair (w*_a, w*_b)."""

    w1: Tensor | None = None
    w1_a: Tensor | None = None
    w1_b: Tensor | None = None
    w2: Tensor | None = None
    w2_a: Tensor | None = None
    w2_b: Tensor | None = None
    t2: Tensor | None = None
    alpha: Tensor | None = None

    @classmethod
    def from_parts(cls, parts: dict[str, Tensor]) -> LokrModule:
        """Build from one layer's `lokr_*` / `alpha` tensors; LayerFormatError if a factor is missing."""
        if "lokr_w1" not in parts:
            require(parts, ("lokr_w1_a", "lokr_w1_b"), "LoKr (without lokr_w1)")
        if "lokr_w2" not in parts:
            require(parts, ("lokr_w2_a", "lokr_w2_b"), "LoKr (without lokr_w2)")
        return cls(*(parts.get(name) for name in PARAMS))

    @property
    def rank(self) -> int | None:
        """r of the low-rank factor (lokr_w2_b's first axis, else lokr_w1_b's); None when both are full."""
        low_rank = self.w2_b if self.w2_b is not None else self.w1_b
        return None if low_rank is None else low_rank.shape[0]

    @property
    def scale(self) -> float:
        """alpha / r with a low-rank factor, else 1."""
        return alpha_scale(self.alpha, self.rank)

    def updown(self, shape: torch.Size, device: torch.device) -> Tensor:
        """kron(w1, w2) in fp32, shaped like the weight (w1 gains 1x1 kernel axes when w2 is 4-D)."""
        w1 = self._first(device)
        w2 = self._second(device)
        if w1.dim() != 2:
            raise LayerFormatError(f"LoKr lokr_w1 must be 2-D, got {tuple(w1.shape)}")
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        change = torch.kron(w1, w2.contiguous())
        return fit_to_weight(change, shape, f"LoKr kron({tuple(w1.shape)}, {tuple(w2.shape)})")

    def _first(self, device: torch.device) -> Tensor:
        if self.w1 is not None:
            return f32(self.w1, device)
        assert self.w1_a is not None and self.w1_b is not None  # from_parts checked
        return low_rank_product(f32(self.w1_a, device), f32(self.w1_b, device), "LoKr lokr_w1_a / lokr_w1_b")

    def _second(self, device: torch.device) -> Tensor:
        if self.w2 is not None:
            return f32(self.w2, device)
        assert self.w2_a is not None and self.w2_b is not None  # from_parts checked
        w2_a, w2_b = f32(self.w2_a, device), f32(self.w2_b, device)
        if self.t2 is None:
            return low_rank_product(w2_a, w2_b, "LoKr lokr_w2_a / lokr_w2_b")
        return tucker_product(f32(self.t2, device), w2_a, w2_b, "LoKr lokr_t2 / lokr_w2_a / lokr_w2_b")
