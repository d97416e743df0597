"""The parts of a Stable Diffusion base model (SD 1.x / 2.x, or SDXL with its second text encoder), as one
value passed between stages."""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


@dataclass
class ModelBundle:
    """A loaded base model. `source` says where it came from (path, hub id or builder name)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler
    source: str
    base_model_version: str = "sd_v1"  # kohya's ss_base_model_version: sd_v1, sd_v2, sdxl_base_v1-0
    # SDXL's second text encoder (OpenCLIP ViT-bigG with its projection) and its tokenizer; None for SD 1/2.
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None

    @property
    def is_sdxl(self) -> bool:
        """Whether this is an SDXL model: two text encoders and a UNet with size/crop conditioning (still so
        after training freed cached text encoders)."""
        return self.text_encoder_2 is not None or self.base_model_version.startswith("sdxl")

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        """The VAE scaling factor (0.18215 for SD 1.x)."""
        return float(self.vae.config.scaling_factor)

    def freeze(self) -> None:
        """Switch all base weights to inference mode: no gradients, no dropout."""
        for module in (self.unet, self.vae, self.text_encoder, self.text_encoder_2):
            if module is None:
                continue
            module.requires_grad_(False)
            module.eval()


def sd_noise_scheduler() -> DDPMScheduler:
    """The training noise schedule of SD 1.x: 1000 steps, scaled-linear betas 0.00085 → 0.012."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
