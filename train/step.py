"""One training step of latent diffusion, as plain functions over plain tensors."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn

from inference.models.bundle import ModelBundle
from inference.text_encoding import apply_emphasis
from train.caption_tokens import CLIP_LENGTH
from train.config import TrainingConfig
from train.loss import (
    debiased_weights,
    elementwise_loss,
    huber_threshold,
    min_snr_weights,
    v_pred_like_noise_weights,
)
from train.loss_mask import apply_loss_mask
from train.noise import apply_multires_noise, apply_noise_offset, perturbed_noise
from train.sdxl_step import POOLED_KEY, encode_sdxl_text, sdxl_unet_conditioning

STATES_KEY = "encoder_hidden_states"  # the UNet's text states in a batch whose text outputs are cached


def encode_text(
    text_encoder: nn.Module, input_ids: torch.Tensor, clip_skip: int = 1, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Token ids (B, 77·n) → hidden states (B, 77·n, D), each chunk of 77 encoded on its own as the engine
    does; clip_skip=2 takes the penultimate layer, normalised. `weights` (B, 77·n), from weighted captions,
    scale each position and restore each chunk's mean (A1111's "Original" emphasis)."""
    batch, length = input_ids.shape
    chunks = input_ids.reshape(-1, CLIP_LENGTH)
    if clip_skip <= 1:
        hidden = text_encoder(chunks)[0]
    else:
        hidden = text_encoder(chunks, output_hidden_states=True).hidden_states[-clip_skip]
        hidden = text_encoder.final_layer_norm(hidden)
    if weights is not None:
        multipliers = weights.reshape(-1, CLIP_LENGTH).to(hidden.device, hidden.dtype)
        hidden = torch.stack(
            [apply_emphasis(h, m, "Original") for h, m in zip(hidden, multipliers, strict=True)]
        )
    return hidden.reshape(batch, length, hidden.shape[-1])


def text_conditioning(
    bundle: ModelBundle,
    ids: torch.Tensor,
    ids_2: torch.Tensor | None,
    weights: torch.Tensor | None,
    clip_skip: int,
) -> dict[str, torch.Tensor]:
    """Token ids (B, 77·n) → the UNet's text inputs: encoder_hidden_states (B, 77·n, D) and, for SDXL (`ids_2`:
    the second tokenizer's ids), pooled_text_embeds (B, P); as the step encodes them (caches, validation)."""
    if bundle.is_sdxl:
        states, pooled = encode_sdxl_text(bundle.text_encoder, bundle.text_encoder_2, ids, ids_2, weights)
        return {STATES_KEY: states, POOLED_KEY: pooled}
    return {STATES_KEY: encode_text(bundle.text_encoder, ids, clip_skip, weights)}


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
    """The batch's text-encoder states (B, 77·n, D): cached ones when present, else encoded now.

    An untrained text encoder runs under no_grad: nobody needs its activations kept for a backward pass.
    """
    if STATES_KEY in batch:
        return batch[STATES_KEY].to(device)
    with torch.set_grad_enabled(train_text_encoder and torch.is_grad_enabled()):
        weights = batch.get("token_weights")
        return encode_text(bundle.text_encoder, batch["input_ids"].to(device), clip_skip, weights)


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def diffusion_loss(
    bundle: ModelBundle,
    batch: dict,
    clip_skip: int = 1,
    prior_loss_weight: float = 1.0,
    training: TrainingConfig | None = None,
    train_text_encoder: bool = True,
    noise_scheduler: DDPMScheduler | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch; regularization images weigh `prior_loss_weight`.

    `training` carries kohya's noise and loss options (noise offset, pyramid noise, input perturbation,
    loss type and Huber schedule, min-SNR-gamma, debiased estimation); None is plain MSE on plain noise.
    `noise_scheduler` replaces the model's own schedule for training (zero terminal SNR).
    """
    t = training or TrainingConfig()
    device = bundle.unet.conv_in.weight.device  # not unet.device: diffusers walks every module for it
    latents = batch_latents(bundle, batch, device)
    # randn by shape, not randn_like: a VAE posterior is a strided view, and torch draws a strided tensor's
    # numbers in another order (and count) than a contiguous one's, so cached and uncached runs would part.
    noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
    noise = apply_noise_offset(noise, t.noise_offset)
    noise = apply_multires_noise(noise, t.multires_noise_iterations, t.multires_noise_discount)
    scheduler = noise_scheduler or bundle.noise_scheduler
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    )
    noisy_input = perturbed_noise(noise, t.ip_noise_gamma, t.ip_noise_gamma_random_strength)
    noisy = scheduler.add_noise(latents, noisy_input, timesteps)
    if bundle.is_sdxl:  # both encoders, the pooled embedding and the size/crop conditioning
        states, added = sdxl_unet_conditioning(bundle, batch, device, train_text_encoder)
        prediction = bundle.unet(noisy, timesteps, states, added_cond_kwargs=added).sample
    else:
        states = batch_text_states(bundle, batch, device, clip_skip, train_text_encoder)
        prediction = bundle.unet(noisy, timesteps, states).sample
    target = diffusion_target(scheduler, latents, noise, timesteps)  # the unperturbed noise
    threshold = None
    if t.loss_type in ("huber", "smooth_l1"):
        threshold = huber_threshold(scheduler, timesteps, t.huber_schedule, t.huber_c, t.huber_scale)
    per_element = elementwise_loss(prediction.float(), target.float(), t.loss_type, threshold)
    if "loss_mask" in batch:  # dataset.masked_loss
        per_element = apply_loss_mask(per_element, batch["loss_mask"])
    per_sample = per_element.mean(dim=(1, 2, 3))
    weights = torch.where(batch["is_reg"].to(per_sample.device), prior_loss_weight, 1.0)
    if t.min_snr_gamma > 0:
        weights = weights * min_snr_weights(scheduler, timesteps, t.min_snr_gamma)
    if t.debiased_estimation_loss:
        weights = weights * debiased_weights(scheduler, timesteps)
    if t.scale_v_pred_loss_like_noise_pred:
        weights = weights * v_pred_like_noise_weights(scheduler, timesteps)
    return (per_sample * weights).mean()
