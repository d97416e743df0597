"""What the inference engine needs from a base model: the four SD parts and the training noise schedule."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


@runtime_checkable
class BaseModel(Protocol):
    """A Stable Diffusion 1.x model: any object with these attributes (e.g. train's ModelBundle)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler


def vae_scale_factor(model: BaseModel) -> int:
    """Pixels per latent cell (8 for SD): the VAE halves the size once per block after the first."""
    return 2 ** (len(model.vae.config.block_out_channels) - 1)
