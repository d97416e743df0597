"""LyCORIS LoHa layers: a Hadamard product of two low-rank factors, as A1111's Lora extension applies them.

Per layer: `hada_w1_a` (out, r), `hada_w1_b` (r, in·k·k), `hada_w2_a`, `hada_w2_b`, optional `alpha`. With
Tucker factors `hada_t1` / `hada_t2` (r, r, k, k) the `_a` / `_b` tensors are (r, out) / (r, in).
The change is (w1_a @ w1_b) ⊙ (w2_a @ w2_b), scaled by alpha / r with r = hada_w1_b's first axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.lycoris import alpha_scale, f32, fit_to_weight, low_rank_product, require, tucker_product

PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha")


@dataclass(frozen=True)
class LohaModule:
    """One layer's LoHa tensors; t1 / t2 None means a plain (non-Tucker) factor."""

    w1_a: Tensor
    w1_b: Tensor
    w2_a: Tensor
    w2_b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None
    alpha: Tensor | None = None

    @classmethod
    def from_parts(cls, parts: dict[str, Tensor]) -> LohaModule:
        """Build from one layer's `hada_*` / `alpha` tensors; LayerFormatError if a factor is missing."""
        w1_a, w1_b, w2_a, w2_b = require(parts, PARAMS[:4], "LoHa")
        return cls(w1_a, w1_b, w2_a, w2_b, parts.get("hada_t1"), parts.get("hada_t2"), parts.get("alpha"))

    @property
    def rank(self) -> int:
        """r, the first axis of hada_w1_b."""
        return self.w1_b.shape[0]

    @property
    def scale(self) -> float:
        """alpha / r, or 1 without an alpha."""
        return alpha_scale(self.alpha, self.rank)

    def updown(self, shape: torch.Size, device: torch.device) -> Tensor:
        """(w1_a @ w1_b) ⊙ (w2_a @ w2_b) in fp32, shaped like the weight."""
        first = _factor(self.w1_a, self.w1_b, self.t1, "1", shape, device)
        second = _factor(self.w2_a, self.w2_b, self.t2, "2", shape, device)
        return first * second


def _factor(
    w_a: Tensor, w_b: Tensor, t: Tensor | None, index: str, shape: torch.Size, device: torch.device
) -> Tensor:
    """One of the two full-size factors, from its low-rank (or Tucker) tensors."""
    w_a, w_b = f32(w_a, device), f32(w_b, device)
    if t is None:
        names = f"LoHa hada_w{index}_a / hada_w{index}_b"
        return fit_to_weight(low_rank_product(w_a, w_b, names), shape, names)
    names = f"LoHa hada_t{index} / hada_w{index}_a / hada_w{index}_b"
    return fit_to_weight(tucker_product(f32(t, device), w_a, w_b, names), shape, names)
