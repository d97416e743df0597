"""The training step's loss weighting: min-SNR-gamma, checked against the SNR of the noise schedule."""

import pytest
import torch
from diffusers import DDPMScheduler

from train.step import min_snr_weights

SD_SCHEDULE = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
)


def _snr(scheduler: DDPMScheduler, t: int) -> float:
    alpha_bar = float(scheduler.alphas_cumprod[t])
    return alpha_bar / (1 - alpha_bar)


def test_min_snr_caps_only_the_nearly_clean_timesteps():
    scheduler = DDPMScheduler(**SD_SCHEDULE)
    timesteps = torch.tensor([0, 50, 200, 500, 999])
    weights = min_snr_weights(scheduler, timesteps, gamma=5.0)
    for t, w in zip(timesteps.tolist(), weights.tolist(), strict=True):
        snr = _snr(scheduler, t)
        expected = 1.0 if snr <= 5.0 else 5.0 / snr
        assert w == pytest.approx(expected, rel=1e-5), t
    assert weights[0] < 0.01  # t=0 has SNR ~1170: nearly no weight
    assert weights[-1] == pytest.approx(1.0)  # pure noise keeps its full weight


def test_min_snr_for_v_prediction_divides_by_snr_plus_one():
    scheduler = DDPMScheduler(**SD_SCHEDULE, prediction_type="v_prediction")
    timesteps = torch.tensor([10, 300, 900])
    weights = min_snr_weights(scheduler, timesteps, gamma=5.0)
    for t, w in zip(timesteps.tolist(), weights.tolist(), strict=True):
        snr = _snr(scheduler, t)
        assert w == pytest.approx(min(snr, 5.0) / (snr + 1.0), rel=1e-5), t
