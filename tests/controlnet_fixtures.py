"""A random-weight tiny ControlNet for the tiny model: its zero convolutions get weights, so it has an effect."""

from __future__ import annotations

import torch
from diffusers import ControlNetModel

# Three stride-2 convolutions: a 64 px hint meets the tiny UNet's 8x8 latents, as 512 px meets SD's 64x64.
TINY_HINT_CHANNELS = (8, 16, 16, 32)


def tiny_controlnet(unet, seed: int = 1, std: float = 0.02) -> ControlNetModel:
    """A ControlNet of `unet`'s shape whose zero-initialised layers are drawn from N(0, std²)."""
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=TINY_HINT_CHANNELS)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")
            ):
                param.normal_(0, std)
    return controlnet.eval()
