"""The noise a training step adds, kohya's options each one small function: offset noise, pyramid
(multires) noise, input perturbation (ip_noise_gamma) and a zero-terminal-SNR schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler


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


def perturbed_noise(noise: torch.Tensor, gamma: float, random_strength: bool) -> torch.Tensor:
    """Input perturbation (Ning et al. 2023; kohya --ip_noise_gamma): the noisy latents are made with
    noise + gamma * extra, while the target stays `noise`, so the model learns to correct the small
    mismatch it meets at sampling time. `random_strength` draws the strength from U(0, gamma) per step."""
    if not gamma:
        return noise
    strength = torch.rand(1, device=noise.device, dtype=noise.dtype) * gamma if random_strength else gamma
    return noise + strength * torch.randn(noise.shape, device=noise.device, dtype=noise.dtype)


def with_zero_terminal_snr(scheduler: DDPMScheduler) -> DDPMScheduler:
    """The same schedule with its betas rescaled so the last step is pure noise: alpha_bar_T = 0
    (Lin et al. 2023; kohya --zero_terminal_snr). Meant for v-prediction models."""
    return DDPMScheduler.from_config(scheduler.config, rescale_betas_zero_snr=True)


def predicting_v(scheduler: DDPMScheduler) -> DDPMScheduler:
    """The same schedule for a base that predicts v (kohya --v_parameterization), when its files do not say so."""
    return DDPMScheduler.from_config(scheduler.config, prediction_type="v_prediction")
