"""SDXL's conditioning as one batchable value: cross-attention tokens plus the UNet's added "vector" inputs.

A1111 passes SDXL conds as dicts {"crossattn": (B, L, 2048), "vector": (B, 2816)}, concatenating and
indexing each key alike (its `catenate_conds` / `subscript_cond`) and padding only "crossattn" to a
longer prompt. Our UNet is diffusers', which embeds the six size/crop numbers itself, so the vector part
is kept as its two inputs: the pooled text embedding and the raw time ids. `SdxlCond` behaves like a
(B, L, D) cond tensor where the engine batches conds (rows, indexing, `to`, `cat_conds`); `unet_inputs`
turns either kind into the UNet's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class SdxlCond:
    """crossattn: (B, L, D1+D2) both encoders' tokens side by side; text_embeds: (B, P) the second
    encoder's pooled, projected output; time_ids: (B, 6) original h, w, crop top, left, target h, w."""

    crossattn: Tensor
    text_embeds: Tensor
    time_ids: Tensor

    @property
    def shape(self) -> torch.Size:
        """The cross-attention part's shape (B, L, D): what batching checks compare."""
        return self.crossattn.shape

    @property
    def device(self) -> torch.device:
        return self.crossattn.device

    def __len__(self) -> int:
        return self.crossattn.shape[0]

    def __getitem__(self, index: Any) -> SdxlCond:
        """The rows `index` selects (an int keeps its batch axis) of every part, as A1111's subscript_cond."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return SdxlCond(self.crossattn[index], self.text_embeds[index], self.time_ids[index])

    def to(self, *args: Any, **kwargs: Any) -> SdxlCond:
        """Every part moved/cast as `Tensor.to(*args, **kwargs)`."""
        return SdxlCond(
            *(part.to(*args, **kwargs) for part in (self.crossattn, self.text_embeds, self.time_ids))
        )


def cat_conds(conds: Sequence[Tensor | SdxlCond]) -> Tensor | SdxlCond:
    """Stack conds along the batch: plain tensors with torch.cat, SdxlConds part by part."""
    if not isinstance(conds[0], SdxlCond):
        return torch.cat(list(conds))
    return SdxlCond(
        torch.cat([c.crossattn for c in conds]),
        torch.cat([c.text_embeds for c in conds]),
        torch.cat([c.time_ids for c in conds]),
    )


def unet_inputs(cond: Tensor | SdxlCond, dtype: torch.dtype) -> dict[str, Any]:
    """The UNet's conditioning keywords for `cond`: SDXL's also carry `added_cond_kwargs`."""
    if not isinstance(cond, SdxlCond):
        return {"encoder_hidden_states": cond.to(dtype)}
    cond = cond.to(dtype)
    added = {"text_embeds": cond.text_embeds, "time_ids": cond.time_ids}
    return {"encoder_hidden_states": cond.crossattn, "added_cond_kwargs": added}
