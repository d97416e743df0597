"""The denoising loss and its per-sample weights, kohya's options each one small function.

`training.loss_type` picks the element-wise loss (l2, l1, huber, smooth_l1); huber and smooth_l1 take a
threshold per sample from `training.huber_schedule` (constant, exponential, snr) and `huber_c` /
`huber_scale`. Per-sample weights: min-SNR-gamma and the debiased estimation loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")


def signal_to_noise(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = alpha_bar / (1 - alpha_bar) per sample (0 at a zero-terminal-SNR last step)."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas / (1.0 - alphas)


def huber_threshold(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, schedule: str, c: float, scale: float
) -> torch.Tensor:
    """kohya's per-sample threshold for huber / smooth_l1 (`--huber_schedule`, `--huber_c`, `--huber_scale`).

    constant: c * scale. exponential: scale * c^(t / T), from `scale` at t = 0 down to c * scale at t = T.
    snr: (1 - c) / (1 + sigma_t)^2 + c with sigma_t = sqrt((1 - alpha_bar) / alpha_bar): near 1 on clean
    steps, falling to c on noisy ones, so outliers on noisy steps count less.
    """
    if schedule == "constant":
        return torch.full(timesteps.shape, c * scale, device=timesteps.device)
    if schedule == "exponential":
        alpha = -math.log(c) / scheduler.config.num_train_timesteps
        return torch.exp(-alpha * timesteps.float()) * scale
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    sigmas = ((1.0 - alphas) / alphas) ** 0.5
    return (1 - c) / (1 + sigmas) ** 2 + c


def elementwise_loss(
    prediction: torch.Tensor, target: torch.Tensor, loss_type: str, threshold: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-element loss (B, C, H, W). huber is kohya's pseudo-Huber 2c(sqrt(d^2 + c^2) - c), which tends to
    d^2 (l2) as c grows; smooth_l1 is 2(sqrt(d^2 + c^2) - c), which tends to 2|d| (l1) as c shrinks."""
    if loss_type == "l2":
        return F.mse_loss(prediction, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(prediction, target, reduction="none")
    if threshold is None:
        raise ValueError(f"loss_type {loss_type} needs a threshold")
    c = threshold.view(-1, 1, 1, 1)
    smooth = torch.sqrt((prediction - target) ** 2 + c**2) - c
    return 2 * c * smooth if loss_type == "huber" else 2 * smooth


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023; kohya --min_snr_gamma): min(SNR, gamma) / SNR.

    Nearly noise-free timesteps (huge SNR) are easy and would dominate the gradient; this caps their
    weight, so training spends itself on the steps that shape composition and colour. v-prediction
    targets already carry a factor SNR + 1, hence min(SNR, gamma) / (SNR + 1) for them. At SNR 0 (a
    zero-terminal-SNR last step) the epsilon weight is its limit, 1.
    """
    snr = signal_to_noise(scheduler, timesteps)
    capped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return capped / (snr + 1.0)
    return torch.where(snr > 0, capped / snr.clamp(min=torch.finfo(snr.dtype).tiny), torch.ones_like(snr))


DEBIASED_SNR_CAP = 1000.0  # kohya caps SNR here before 1 / sqrt(SNR)
DEBIASED_SNR_FLOOR = 1e-3  # ours: keeps 1 / sqrt(SNR) finite at a zero-terminal-SNR last step


def debiased_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Debiased estimation loss (kohya --debiased_estimation_loss): 1 / sqrt(SNR) for epsilon models,
    1 / (SNR + 1) for v-prediction; SNR capped at 1000 as kohya does."""
    snr = signal_to_noise(scheduler, timesteps).clamp(min=DEBIASED_SNR_FLOOR, max=DEBIASED_SNR_CAP)
    if scheduler.config.prediction_type == "v_prediction":
        return 1.0 / (snr + 1.0)
    return 1.0 / torch.sqrt(snr)


def v_pred_like_noise_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """kohya --scale_v_pred_loss_like_noise_pred: SNR / (SNR + 1), SNR capped at 1000, which weighs a
    v-prediction loss over the timesteps as a noise-prediction loss is weighed."""
    snr = signal_to_noise(scheduler, timesteps).clamp(max=DEBIASED_SNR_CAP)
    return snr / (snr + 1.0)
