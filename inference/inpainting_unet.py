"""Inpainting models (SD 1.5 inpainting: a UNet of 9 input channels) and the image conditioning they take.

The UNet sees [x (4), mask (1), masked-image latents (4)] stacked on channels, as A1111 feeds its
`c_concat`. `InpaintingUNet` hides the 5 extra channels behind the plain UNet's call, so denoisers and
samplers run unchanged. The conditioning is built as A1111 builds it:
- txt2img (txt2img_image_conditioning): a mask of ones and the latents of a flat grey picture;
- img2img and inpainting (inpainting_image_conditioning): the mask rounded to 0/1 (ones without a mask), the
  picture lerped towards its masked copy by `inpainting_mask_weight`, then encoded; the mask is brought to
  the latent size by nearest-neighbour interpolation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor

INPAINTING_IN_CHANNELS = 9  # 4 latent + 1 mask + 4 masked-image latent channels


def is_inpainting_unet(unet: Any) -> bool:
    """True for a UNet that takes the inpainting conditioning (9 input channels)."""
    return int(getattr(unet.config, "in_channels", 4)) == INPAINTING_IN_CHANNELS


def encode_pixels(model: BaseModel, pixels: Tensor) -> Tensor:
    """pixels: (B, 3, H, W) in [-1, 1] → latents (B, 4, H/8, W/8) in the UNet's scale (the mean, one at a
    time, as inference.img2img encodes)."""
    vae = model.vae
    pixels = pixels.to(vae.device, vae.dtype)
    latents = [vae.encode(pixels[i : i + 1]).latent_dist.mean for i in range(len(pixels))]
    return torch.cat(latents).float() * vae.config.scaling_factor


def txt2img_conditioning(model: BaseModel, height: int, width: int) -> Tensor:
    """A1111's conditioning for txt2img on an inpainting model: all masked, a grey picture → (1, 5, h, w)."""
    grey = torch.zeros(1, 3, height, width)  # 0.5 in [0, 1]
    latents = encode_pixels(model, grey)
    return torch.cat([torch.ones_like(latents[:, :1]), latents], dim=1)


def inpainting_conditioning(
    model: BaseModel, pixels: Tensor, mask: Image.Image | None, weight: float, latent_size: tuple[int, int]
) -> Tensor:
    """pixels: (B, 3, H, W) in [-1, 1]; mask: "L" (or RGB) W x H, white = repainted, or None (all) → (B, 5, h, w).

    `weight` is A1111's "conditional mask strength": 1 hides the masked pixels fully, 0 shows the whole picture.
    """
    if mask is None:
        binary = pixels.new_ones(1, 1, *pixels.shape[-2:])
    else:
        values = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        binary = torch.from_numpy(values).round()[None, None]  # the model was trained on hard masks
    binary = binary.to(pixels.device, pixels.dtype)
    masked = torch.lerp(pixels, pixels * (1.0 - binary), weight)
    latents = encode_pixels(model, masked)
    small = torch.nn.functional.interpolate(binary.to(latents.device), size=latent_size)
    return torch.cat([small.expand(len(latents), -1, -1, -1), latents], dim=1)


Conditioning = Tensor | Callable[[int, int], Tensor]  # fixed (R, 5, h, w), or made for a latent (h, w)


class InpaintingUNet:
    """A 9-channel UNet called as a 4-channel one: the image conditioning is stacked onto every input.

    `conditioning` has one row (shared by every image) or one per image; a UNet batch of N rows takes it
    repeated N / rows times (CFG stacks the uncond and cond halves, each in image order). A callable makes it
    for the latent size asked (txt2img and the hires pass, whose sizes differ), cached per size.
    """

    def __init__(self, unet: Any, conditioning: Conditioning) -> None:
        self.unet = unet
        self._conditioning = conditioning
        self._cache: dict[tuple[int, int], Tensor] = {}

    def __getattr__(self, name: str) -> Any:  # config, device, dtype, parameters: the wrapped UNet's
        return getattr(self.unet, name)

    def conditioning_for(self, sample: Tensor) -> Tensor:
        """The (N, 5, h, w) conditioning for a UNet input `sample`: (N, 4, h, w)."""
        if callable(self._conditioning):
            size = (sample.shape[-2], sample.shape[-1])
            if size not in self._cache:
                self._cache[size] = self._conditioning(*size)
            conditioning = self._cache[size]
        else:
            conditioning = self._conditioning
        rows = len(conditioning)
        if len(sample) % rows:
            raise ValueError(f"a UNet batch of {len(sample)} cannot take {rows} rows of image conditioning")
        return conditioning.repeat(len(sample) // rows, 1, 1, 1).to(sample.device, sample.dtype)

    def __call__(self, sample: Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        """As the UNet's call, with `sample`: (N, 4, h, w) latents only."""
        stacked = torch.cat([sample, self.conditioning_for(sample)], dim=1)
        return self.unet(stacked, timestep, *args, **kwargs)


class ModelWithUNet:
    """`model` with its UNet swapped for `unet` (the other parts are the model's own)."""

    def __init__(self, model: BaseModel, unet: Any) -> None:
        self._model = model
        self.unet = unet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def with_conditioning(model: BaseModel, conditioning: Conditioning) -> BaseModel:
    """`model` whose UNet takes `conditioning`; a model that is not an inpainting one is returned as is."""
    if not is_inpainting_unet(model.unet):
        return model
    return ModelWithUNet(model, InpaintingUNet(model.unet, conditioning))  # type: ignore[return-value]


def for_txt2img(model: BaseModel) -> BaseModel:
    """`model` ready for txt2img (and the hires fix): an inpainting UNet gets A1111's all-masked grey
    conditioning at whatever size it renders; other models are returned as they are."""
    factor = vae_scale_factor(model)
    return with_conditioning(model, lambda h, w: txt2img_conditioning(model, h * factor, w * factor))
