"""What every weight family of a LoRA file provides, and the LyCORIS helpers LoHa and LoKr share.

A layer's family (LoRA/LoCon, LoHa, LoKr) gives an unscaled weight change `updown` shaped like the layer's
weight and a `scale` (alpha / rank); the patch adds multiplier * scale * updown, as A1111 does.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class LayerFormatError(ValueError):
    """One layer's tensors are incomplete or do not fit its weight; the caller adds the file and layer."""


class LayerWeights(Protocol):
    """The weights one file holds for one layer, whatever their family."""

    @property
    def scale(self) -> float:
        """The factor the trainer applied to the change (alpha / rank, or 1)."""
        ...

    def updown(self, shape: torch.Size, device: torch.device) -> Tensor:
        """The unscaled weight change in fp32 on `device`, shaped `shape`; LayerFormatError if it can't be."""
        ...


def f32(tensor: Tensor, device: torch.device) -> Tensor:
    """`tensor` in fp32 on `device`: the change is always computed in fp32."""
    return tensor.to(device, torch.float32)


def alpha_scale(alpha: Tensor | None, rank: int | None) -> float:
    """alpha / rank, or 1.0 without an alpha or a rank (A1111's rule for LyCORIS layers)."""
    if alpha is None or rank is None:
        return 1.0
    return float(alpha) / rank


def shape_text(tensor: Tensor) -> str:
    """A tensor's shape as `(a, b, …)` for messages."""
    return str(tuple(tensor.shape))


def low_rank_product(a: Tensor, b: Tensor, names: str) -> Tensor:
    """a (out, r[, …]) @ b (r, in[, k, k]), both flattened past their first axis: (out, in·k·k)."""
    a_2d, b_2d = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if a_2d.shape[1] != b_2d.shape[0]:
        raise LayerFormatError(f"{names} {shape_text(a)} and {shape_text(b)} have different ranks")
    return a_2d @ b_2d


def tucker_product(t: Tensor, w_a: Tensor, w_b: Tensor, names: str) -> Tensor:
    """The Tucker (CP) factor: t (r, r, k, k), w_a (r, out), w_b (r, in) → (out, in, k, k)."""
    if w_a.dim() != 2 or w_b.dim() != 2 or t.dim() < 2 or t.shape[:2] != (w_a.shape[0], w_b.shape[0]):
        raise LayerFormatError(
            f"{names} {shape_text(t)}, {shape_text(w_a)} and {shape_text(w_b)} do not form a Tucker "
            "factor (expected t (r, r, k, k), w_a (r, out), w_b (r, in))"
        )
    return torch.einsum("ij...,jr,ip->pr...", t, w_b, w_a)


def fit_to_weight(change: Tensor, shape: torch.Size, what: str) -> Tensor:
    """`change` reshaped to the weight's `shape`: same rows and size, and the same kernel if both are 4-D."""
    fits = change.shape[0] == shape[0] and change.numel() == shape.numel()
    if change.dim() == 4 and len(shape) == 4:
        fits = fits and change.shape == shape
    if not fits:
        raise LayerFormatError(
            f"{what} gives {shape_text(change)}, which does not fit the model's weight {tuple(shape)}"
        )
    return change.reshape(shape)


def require(parts: dict[str, Tensor], names: tuple[str, ...], family: str) -> list[Tensor]:
    """The tensors `names` of one layer, or LayerFormatError naming the missing ones."""
    missing = [name for name in names if name not in parts]
    if missing:
        raise LayerFormatError(f"{family} layer has no {' or '.join(missing)}")
    return [parts[name] for name in names]
