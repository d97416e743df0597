"""The training step's loss weighting: min-SNR-gamma, checked against the SNR of the noise schedule."""

import pytest
import torch
from diffusers import DDPMScheduler

from train.loss import min_snr_weights
from train.noise import apply_multires_noise

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


def test_multires_noise_moves_power_to_low_frequencies_at_unit_variance():
    torch.manual_seed(0)
    plain = torch.randn(256, 4, 8, 8)
    assert apply_multires_noise(plain, 0, 0.3) is plain  # off
    torch.manual_seed(1)
    pyramid = apply_multires_noise(plain.clone(), 6, 0.8)
    assert pyramid.std().item() == pytest.approx(1.0, abs=1e-5)
    # The mean of each 8 x 8 channel (its lowest frequency) varies far more than plain noise's (1/8).
    assert pyramid.mean(dim=(2, 3)).std() > 2 * plain.mean(dim=(2, 3)).std()
    # Pixels next to each other are correlated now, as coarse noise was upsampled into them.
    neighbours = torch.corrcoef(torch.stack([pyramid[..., :-1].flatten(), pyramid[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.2
    torch.manual_seed(1)
    assert torch.equal(pyramid, apply_multires_noise(plain.clone(), 6, 0.8))  # seeded: the same noise
