"""Text to image: prompt encoding, seeded noise, sampling in sigma space and VAE decoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor
from inference.samplers import CFGDenoiser, EpsDenoiser, get_sampler, get_sigmas_normal
from inference.text_encoding import encode_batch_conds


@dataclass
class GenerationParams:
    """Everything that determines one generated image (and what its infotext records)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    clip_skip: int = 1
    sampler: str = "euler"
    model_name: str | None = None
    rng: str = "CPU"  # our noise comes from a CPU generator; A1111 reproduces it with RNG source "CPU"

    def validate(self, scale_factor: int = 8) -> None:
        """Raise ValueError for values no image can be generated with."""
        if self.width % scale_factor or self.height % scale_factor or min(self.width, self.height) <= 0:
            raise ValueError(
                f"width and height must be positive multiples of {scale_factor}, got "
                f"{self.width}x{self.height}"
            )
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        get_sampler(self.sampler)


def initial_noise(seed: int, shape: tuple[int, ...]) -> Tensor:
    """Unit Gaussian noise from a CPU generator seeded with `seed`, identical on every machine."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))


def decode_latents(model: BaseModel, latents: Tensor) -> list[Image.Image]:
    """latents: (B, 4, H/8, W/8) in the UNet's scale → B RGB images (W x H)."""
    vae = model.vae
    pixels = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    pixels = ((pixels.float() + 1) / 2).clamp(0, 1)
    # Truncating (not rounding) to uint8 matches A1111's saved pixels.
    array = (255 * pixels.permute(0, 2, 3, 1).cpu().numpy()).astype(np.uint8)
    return [Image.fromarray(image) for image in array]


def _check_batchable(batch: list[GenerationParams]) -> None:
    shared = ("steps", "cfg_scale", "width", "height", "sampler", "clip_skip")
    for params in batch[1:]:
        differ = [name for name in shared if getattr(params, name) != getattr(batch[0], name)]
        if differ:
            raise ValueError(f"images of one batch must share {', '.join(differ)}; render them separately")


def sample_latents(model: BaseModel, batch: list[GenerationParams]) -> Tensor:
    """Run the sampler from each image's seeded noise to clean latents: (B, 4, H/8, W/8) in fp32."""
    _check_batchable(batch)
    first = batch[0]
    scale = vae_scale_factor(model)
    unet = model.unet
    cond, uncond = encode_batch_conds(
        model.text_encoder,
        model.tokenizer,
        [p.prompt for p in batch],
        [p.negative_prompt for p in batch],
        first.clip_skip,
    )
    denoiser = EpsDenoiser(unet, model.noise_scheduler.alphas_cumprod.to(unet.device))
    sigmas = get_sigmas_normal(denoiser.sigmas, first.steps)
    shape = (1, unet.config.in_channels, first.height // scale, first.width // scale)
    # Noise per image from its own seed: image i is the same whatever else shares its batch.
    x = torch.cat([initial_noise(p.seed, shape) for p in batch]).to(unet.device) * sigmas[0]
    guided = CFGDenoiser(denoiser, cond.to(unet.device), uncond.to(unet.device), first.cfg_scale)
    return get_sampler(first.sampler)(guided, x, sigmas)


def generate_batch(model: BaseModel, batch: list[GenerationParams]) -> list[Image.Image]:
    """Render several images in one sampling pass (one UNet call per step for all of them).

    They must share steps, CFG scale, size, sampler and clip skip; prompts, negative prompts and seeds may
    differ (conds are padded to the batch's longest, as A1111 pads them).
    """
    if not batch:
        return []
    for params in batch:
        params.validate(vae_scale_factor(model))
    with torch.no_grad():
        return decode_latents(model, sample_latents(model, batch))


def generate(model: BaseModel, params: GenerationParams) -> Image.Image:
    """Render one image for `params`; the same params on the same model give identical pixels."""
    return generate_batch(model, [params])[0]


def txt2img(
    model: BaseModel,
    prompt: str,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int = 20,
    cfg_scale: float = 7.0,
    width: int = 512,
    height: int = 512,
    clip_skip: int = 1,
    sampler: str = "euler",
) -> Image.Image:
    """Render one image from a prompt, A1111 txt2img style (75-token chunks, Euler, CPU-seeded noise)."""
    params = GenerationParams(
        prompt, negative_prompt, seed, steps, cfg_scale, width, height, clip_skip, sampler
    )
    return generate(model, params)
