"""One training step of latent diffusion, as plain functions over plain tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from train.models.bundle import ModelBundle


def encode_text(text_encoder: nn.Module, input_ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """Token ids (B, 77) → hidden states (B, 77, D); clip_skip=2 takes the penultimate layer, normalised."""
    if clip_skip <= 1:
        return text_encoder(input_ids)[0]
    hidden = text_encoder(input_ids, output_hidden_states=True).hidden_states[-clip_skip]
    return text_encoder.final_layer_norm(hidden)


@torch.no_grad()
def encode_images(bundle: ModelBundle, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] → scaled latents (B, 4, H/8, W/8), sampled from the VAE posterior."""
    pixel_values = pixel_values.to(bundle.vae.device, bundle.vae.dtype)
    return bundle.vae.encode(pixel_values).latent_dist.sample() * bundle.latent_scale


def sample_cached_latents(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A sample of cached posteriors (B, 4, h, w): `mean + std * randn`, drawn as the VAE's own sample() draws."""
    return mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)


def batch_latents(bundle: ModelBundle, batch: dict, device: torch.device) -> torch.Tensor:
    """The batch's latents: sampled from the cached posteriors when the batch has them, else encoded now."""
    if "latent_mean" in batch:
        return sample_cached_latents(batch["latent_mean"].to(device), batch["latent_std"].to(device))
    return encode_images(bundle, batch["pixel_values"])


def batch_text_states(
    bundle: ModelBundle, batch: dict, device: torch.device, clip_skip: int, train_text_encoder: bool
) -> torch.Tensor:
    """The batch's text-encoder states (B, 77, D): cached ones when present, else encoded now.

    An untrained text encoder runs under no_grad: nobody needs its activations kept for a backward pass.
    """
    if "encoder_hidden_states" in batch:
        return batch["encoder_hidden_states"].to(device)
    with torch.set_grad_enabled(train_text_encoder and torch.is_grad_enabled()):
        return encode_text(bundle.text_encoder, batch["input_ids"].to(device), clip_skip)


def apply_noise_offset(noise: torch.Tensor, offset: float) -> torch.Tensor:
    """Add a per-channel constant so the model can learn overall brightness (kohya --noise_offset)."""
    if not offset:
        return noise
    shift = torch.randn(noise.shape[0], noise.shape[1], 1, 1, device=noise.device, dtype=noise.dtype)
    return noise + offset * shift


def apply_multires_noise(noise: torch.Tensor, iterations: int, discount: float) -> torch.Tensor:
    """Pyramid noise (kohya --multires_noise_iterations / --multires_noise_discount).

    Adds noise drawn at coarser and coarser grids (each 2 to 4 times smaller than the last, at random, until
    1 x 1), upsampled bilinearly and weighted discount**i, then rescales to unit variance. Low frequencies
    then carry more noise, so the model learns looks that span the picture (vignettes, lighting) sooner.
    Draws from torch's global generator, so a seeded run repeats exactly.
    """
    if iterations <= 0:
        return noise
    batch, channels, height, width = noise.shape
    for i in range(iterations):
        ratio = float(torch.rand(())) * 2 + 2
        h, w = max(1, int(height / ratio**i)), max(1, int(width / ratio**i))
        coarse = torch.randn(batch, channels, h, w, device=noise.device, dtype=noise.dtype)
        noise = noise + F.interpolate(coarse, size=(height, width), mode="bilinear") * discount**i
        if h == 1 or w == 1:
            break
    return noise / noise.std()


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023; kohya --min_snr_gamma): min(SNR, gamma) / SNR.

    Nearly noise-free timesteps (huge SNR) are easy and would dominate the gradient; this caps their
    weight, so training spends itself on the steps that shape composition and colour. v-prediction
    targets already carry a factor SNR + 1, hence min(SNR, gamma) / (SNR + 1) for them.
    """
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1.0 - alphas)
    capped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return capped / (snr + 1.0)
    return capped / snr


def diffusion_loss(
    bundle: ModelBundle,
    batch: dict,
    clip_skip: int = 1,
    noise_offset: float = 0.0,
    prior_loss_weight: float = 1.0,
    min_snr_gamma: float = 0.0,
    multires: tuple[int, float] = (0, 0.3),
    train_text_encoder: bool = True,
) -> torch.Tensor:
    """Mean-squared denoising loss of one batch; regularization images weigh `prior_loss_weight`.

    `min_snr_gamma` > 0 weighs each sample by `min_snr_weights` (0 leaves the plain mean, as kohya).
    `multires` = (iterations, discount) of pyramid noise, applied after the offset as kohya does (0: off).
    """
    device = bundle.unet.conv_in.weight.device  # not unet.device: diffusers walks every module for it
    latents = batch_latents(bundle, batch, device)
    # randn by shape, not randn_like: a VAE posterior is a strided view, and torch draws a strided tensor's
    # numbers in another order (and count) than a contiguous one's, so cached and uncached runs would part.
    noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
    noise = apply_multires_noise(apply_noise_offset(noise, noise_offset), *multires)
    scheduler = bundle.noise_scheduler
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    states = batch_text_states(bundle, batch, device, clip_skip, train_text_encoder)
    prediction = bundle.unet(noisy, timesteps, states).sample
    target = diffusion_target(scheduler, latents, noise, timesteps)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    weights = torch.where(batch["is_reg"].to(per_sample.device), prior_loss_weight, 1.0)
    if min_snr_gamma > 0:
        weights = weights * min_snr_weights(scheduler, timesteps, min_snr_gamma)
    return (per_sample * weights).mean()
