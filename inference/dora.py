"""DoRA layers (`dora_scale` beside a LoRA, LoHa or LoKr change), applied as ComfyUI and Forge apply them.

With W the layer's weight, ΔW = scale * updown the layer's change and m = `dora_scale`:

    W' = (W + ΔW) * m / (‖·‖ + eps),    eps = fp32's machine epsilon,
    patched weight = W + multiplier * (W' - W).

The axis is told by the magnitude's shape, as in ComfyUI's `weight_decompose`:
- (1, in[, 1, 1]), the input axis: ‖·‖ is the norm of the merged weight W + ΔW over everything but the input
  channel. A1111 (always this axis), LyCORIS (`wd_on_output=False`) and every ComfyUI/Forge version agree on
  it; LoraSmith trains this form.
- (out, 1[, 1, 1]) or (out,), the output axis: ComfyUI and Forge take the norm of the *original* weight W per
  output row, where LyCORIS (its default, `wd_on_output=True`) normalises W + ΔW; we follow ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.lycoris import LayerFormatError, LayerWeights, shape_text

EPS = torch.finfo(torch.float32).eps


def output_norms(weight: Tensor) -> Tensor:
    """The norm of each output row: (out, in[, k, k]) → (out, 1[, 1, 1])."""
    return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (weight.dim() - 1))


def input_norms(weight: Tensor) -> Tensor:
    """The norm of each input channel over the output rows and kernel: (out, in[, k, k]) → (1, in[, 1, 1])."""
    return output_norms(weight.transpose(0, 1)).transpose(0, 1)


@dataclass(frozen=True)
class DoraModule:
    """One layer's change (LoRA, LoHa or LoKr) with its magnitude `dora_scale`."""

    change: LayerWeights
    magnitude: Tensor

    @property
    def scale(self) -> float:
        """The change's own alpha / rank."""
        return self.change.scale

    def updown(self, shape: torch.Size, device: torch.device) -> Tensor:
        """The unscaled low-rank change, before the decomposition (see `delta` for the patch)."""
        return self.change.updown(shape, device)

    def _on_output_axis(self, shape: torch.Size) -> bool:
        """Whether the magnitude is per output row (else per input channel); LayerFormatError if neither fits."""
        m = self.magnitude
        if m.shape[0] == shape[0] and m.numel() == shape[0]:
            return True
        if len(shape) > 1 and m.numel() == shape[1] and m.shape[0] == 1:
            return False
        raise LayerFormatError(
            f"dora_scale {shape_text(m)} fits neither the output axis ({shape[0]}, 1) nor the input axis "
            f"(1, {shape[1] if len(shape) > 1 else '?'}) of the model's weight {tuple(shape)}"
        )

    def delta(self, weight: Tensor, multiplier: float) -> Tensor:
        """multiplier * (W' - W) in fp32 on the weight's device, shaped like the weight (module docstring)."""
        base = weight.detach().float()
        merged = base + self.change.updown(weight.shape, weight.device) * self.change.scale
        if self._on_output_axis(weight.shape):
            magnitude = self.magnitude.reshape(output_norms(base).shape)
            norms = output_norms(base)  # ComfyUI's choice: the base weight, not the merged one
        else:
            magnitude = self.magnitude.reshape(input_norms(base).shape)
            norms = input_norms(merged)
        decomposed = merged * (magnitude.to(weight.device, torch.float32) / (norms + EPS))
        return (decomposed - base) * multiplier
