"""Inpainting, A1111's img2img "Inpaint" tab: img2img that repaints only under a mask.

Each step, outside the mask, the denoised latents are replaced by the init image's (A1111's CFG denoiser
blend `denoised * nmask + init_latent * mask`), and once more after the last step; after decoding, the
original pixels are laid over the render wherever the blurred mask keeps them (apply_overlay). The latent
mask is the render-size mask shrunk to the latent grid (bicubic) and rounded to 0 or 1. An inpainting
model (9-channel UNet) also sees the mask and the masked picture (inference.inpainting_unet).

Known difference: A1111 draws "latent noise" from the first batch's seeds for every batch of a run; here
each image's own seed gives it, so the first batch is A1111's and later ones differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor
from inference.controlnet_crop import MaskCrop
from inference.controlnet_passes import PassControl
from inference.embeddings import EmbeddingDatabase
from inference.img2img import images_to_tensor, img2img_steps, run_img2img_sampler
from inference.inpaint_config import InpaintConfig
from inference.inpaint_prep import MaskedInit, prepare_masked_init
from inference.inpainting_unet import (
    encode_pixels,
    inpainting_conditioning,
    is_inpainting_unet,
    with_conditioning,
)
from inference.overlay import apply_overlay
from inference.txt2img import GenerationParams, decode_latents, prepare_sampling
from inference.variation import image_noise_with_variations

FILL_ORIGINAL, FILL_LATENT_NOISE, FILL_LATENT_NOTHING = 1, 2, 3


def load_mask(path: str | None) -> Image.Image | None:
    """The mask file as stored (its alpha kept: `inference.masking.binary_mask` reads it), or None."""
    if path is None:
        return None
    with Image.open(path) as opened:
        return opened.copy()


def latent_masks(mask: Image.Image, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The render-size mask on the latent grid, A1111's (mask, nmask): (keep, repaint), each (1, 1, h, w) of 0/1."""
    small = mask.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC)
    repaint = torch.from_numpy(np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255))[None, None]
    return 1.0 - repaint, repaint


class MaskBlend:
    """A guided denoiser (x, sigma) → x0 whose result keeps `init` where `keep` is 1, as A1111 blends."""

    def __init__(
        self, denoise: Callable[[Tensor, Tensor], Tensor], init: Tensor, keep: Tensor, repaint: Tensor
    ):
        self.denoise, self.init, self.keep, self.repaint = denoise, init, keep, repaint

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: (B, 4, h, w), sigma: (B,) → blended x0 (B, 4, h, w)."""
        return self.denoise(x, sigma) * self.repaint + self.init * self.keep

    def __getattr__(self, name: str) -> Any:  # the CFG denoiser's step counter and the like
        return getattr(self.denoise, name)


class Inpainter:
    """Renders batches of img2img from one picture and mask (mask None: plain img2img on an inpainting model).

    The picture and mask are prepared once (as A1111's init); each batch encodes, samples and lays the
    overlay. Images are width x height, or the picture's own size for "Only masked". `control`: ControlNet
    units at the render size, set once their maps are made (for "Only masked", cut by `mask_crop`).
    """

    def __init__(
        self,
        model: BaseModel,
        init: Image.Image,
        mask: Image.Image | None,
        config: InpaintConfig,
        denoising_strength: float,
        width: int,
        height: int,
        embeddings: EmbeddingDatabase | None = None,
    ) -> None:
        self.model, self.config, self.strength, self.embeddings = (
            model,
            config,
            denoising_strength,
            embeddings,
        )
        self.prepared: MaskedInit = prepare_masked_init(init, mask, config, width, height)
        self.picture_size, self.render_size = init.size, (width, height)
        self.control: PassControl | None = None

    def mask_crop(self) -> MaskCrop | None:
        """The box of the picture that "Only masked" renders (None when the whole picture renders)."""
        if self.prepared.paste is None:
            return None
        x, y, w, h = self.prepared.paste
        return MaskCrop((x, y, x + w, y + h), self.picture_size, self.render_size)

    @property
    def fields(self) -> dict[str, Any]:
        """The infotext keys of an image, in A1111's order (pass them as `extra`)."""
        fields: dict[str, Any] = {"Denoising strength": self.strength}
        if is_inpainting_unet(self.model.unet):  # A1111 writes the float as Python prints it: "1.0"
            fields["Conditional mask weight"] = str(float(self.config.inpainting_mask_weight))
        return fields | self.prepared.fields

    def __call__(self, batch: list[GenerationParams]) -> list[Image.Image]:
        """One image per params, the batch sharing one sampling pass."""
        for params in batch:
            params.validate(vae_scale_factor(self.model))
        with torch.no_grad():
            latents = self._sample(batch)
            images = decode_latents(self.model, latents)
        prepared = self.prepared
        if prepared.overlay is None:
            return images
        return [apply_overlay(image, prepared.overlay, prepared.paste) for image in images]

    def _sample(self, batch: list[GenerationParams]) -> Tensor:
        """Latents to decode: (B, 4, h, w), already blended with the init outside the mask."""
        first, prepared = batch[0], self.prepared
        pixels = images_to_tensor([prepared.image], first.width, first.height) * 2 - 1  # (1, 3, H, W)
        init = encode_pixels(self.model, pixels).expand(len(batch), -1, -1, -1)
        model = self.model
        if is_inpainting_unet(model.unet):
            size = (init.shape[-2], init.shape[-1])
            weight = self.config.inpainting_mask_weight
            model = with_conditioning(
                model, inpainting_conditioning(model, pixels, prepared.mask, weight, size)
            )
        plan = img2img_steps(first.steps, self.strength)
        callback = None
        if self.control is not None:  # the ControlNet sees the 4 latent channels, as the extension's
            model, controlled = self.control.controlled(model, plan.sampler_steps)
            callback = controlled.on_step
        setup = prepare_sampling(model, batch, self.embeddings)
        denoise: Callable[[Tensor, Tensor], Tensor] = setup.denoise
        if prepared.mask is not None:
            keep, repaint = (m.to(init.device) for m in latent_masks(prepared.mask, *init.shape[-2:]))
            init = self._masked_content(init, keep, repaint, batch)
            denoise = MaskBlend(setup.denoise, init, keep, repaint)
        spec, sigmas, schedule = setup.spec, setup.model_sigmas, setup.schedule
        samples = run_img2img_sampler(spec, denoise, setup.noise, init, plan, sigmas, schedule, callback)
        if prepared.mask is not None:
            samples = samples * repaint + init * keep
        return samples

    def _masked_content(
        self, init: Tensor, keep: Tensor, repaint: Tensor, batch: list[GenerationParams]
    ) -> Tensor:
        """The init latents with A1111's "latent noise" (each seed's first noise) or "latent nothing" (zeros)
        under the mask; "fill" and "original" changed the picture (or nothing) instead."""
        mode = self.config.fill_mode
        if mode == FILL_LATENT_NOISE:
            zeros = [0] * len(batch)
            noise = image_noise_with_variations(
                [p.seed for p in batch], zeros, [0.0] * len(batch), init.shape[1:], [p.rng for p in batch],
                init.device,
            ).randn()  # fmt: skip
            return init * keep + noise * repaint
        if mode == FILL_LATENT_NOTHING:
            return init * keep
        return init
