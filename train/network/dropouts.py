"""kohya's three LoRA dropouts, applied to the down projection's output while training.

- `network_dropout` (network.dropout): ordinary dropout on the down projection's output, the rank-sized
  activations, not on the layer's input (peft's lora_dropout drops the input, which is another regulariser).
- `rank_dropout`: whole rank channels dropped per sample, the rest scaled by 1 / (1 - p).
- `module_dropout`: the whole LoRA of a layer skipped for a step with probability p.

They draw from torch's global generator in kohya's order (module, then network, then rank), so a seeded run
repeats and a resumed one continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Dropouts:
    network: float = 0.0
    rank: float = 0.0
    module: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.network or self.rank or self.module)


def apply_dropouts(down_output: torch.Tensor, dropouts: Dropouts) -> torch.Tensor:
    """The down projection's output (B, ..., r) for a Linear, (B, r, H, W) for a conv, after the dropouts."""
    lx = down_output
    if dropouts.module and float(torch.rand(1)) < dropouts.module:
        return lx * 0  # the layer's LoRA adds nothing this step (kohya returns the base output)
    if dropouts.network:
        lx = F.dropout(lx, p=dropouts.network)
    if dropouts.rank:
        rank_dim = 1 if lx.dim() == 4 else -1
        mask = torch.rand((lx.shape[0], lx.shape[rank_dim]), device=lx.device) > dropouts.rank
        if lx.dim() == 4:
            mask = mask[:, :, None, None]
        elif lx.dim() == 3:
            mask = mask[:, None, :]
        lx = lx * mask.to(lx.dtype) / (1.0 - dropouts.rank)
    return lx


def install_dropouts(down: nn.Module, dropouts: Dropouts) -> None:
    """Apply `dropouts` to `down`'s output whenever `down` is in training mode."""
    if not dropouts:
        return

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return apply_dropouts(output, dropouts) if module.training else output

    down.register_forward_hook(hook)
