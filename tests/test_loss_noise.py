"""kohya's loss and noise options, each by its effect: huber tends to l2 as huber_c grows, the Huber
schedules follow their formulas, ip_noise_gamma perturbs only the noisy input, zero terminal SNR gives
alpha_bar_T = 0, debiased estimation weighs by 1/sqrt(SNR); wrong pairings are refused in one line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open
from torch import nn

from train.config import TrainingConfig
from train.errors import ConfigError
from train.loss import (
    debiased_weights,
    elementwise_loss,
    huber_threshold,
    min_snr_weights,
    signal_to_noise,
    v_pred_like_noise_weights,
)
from train.noise import perturbed_noise, with_zero_terminal_snr
from train.step import diffusion_loss

from .test_cli import QUICK, run_train


def sd_schedule() -> DDPMScheduler:
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_huber_tends_to_l2_as_its_threshold_grows_and_smooth_l1_to_twice_l1_as_it_shrinks():
    gen = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64), torch.zeros(2, 4, 8, 8)
    target = target.double()
    l2 = elementwise_loss(prediction, target, "l2")
    huge = torch.full((2,), 1e3, dtype=torch.float64)  # the gap is d^4 / 4c^2: below 1e-5 of d^2 here
    assert torch.allclose(elementwise_loss(prediction, target, "huber", huge), l2, rtol=1e-5, atol=1e-9)
    tiny = torch.full((2,), 1e-9, dtype=torch.float64)
    l1 = elementwise_loss(prediction, target, "l1")
    assert torch.allclose(elementwise_loss(prediction, target, "smooth_l1", tiny), 2 * l1, atol=1e-8)
    # in between, huber grows linearly for large errors: outliers weigh less than under l2
    c = torch.full((2,), 0.1, dtype=torch.float64)
    big = elementwise_loss(torch.full_like(prediction, 10.0), target, "huber", c)
    assert torch.allclose(big, torch.full_like(big, 2 * 0.1 * (math.sqrt(100 + 0.01) - 0.1)))


def test_huber_schedules_follow_their_formulas():
    scheduler, t = sd_schedule(), torch.tensor([0, 250, 500, 999])
    constant = huber_threshold(scheduler, t, "constant", 0.1, 2.0)
    assert torch.allclose(constant, torch.full((4,), 0.2))
    exponential = huber_threshold(scheduler, t, "exponential", 0.1, 2.0)
    assert torch.allclose(exponential, 2.0 * 0.1 ** (t.float() / 1000))  # scale at t=0, c*scale at t=T
    snr = huber_threshold(scheduler, t, "snr", 0.1, 1.0)
    alphas = scheduler.alphas_cumprod[t]
    sigmas = ((1 - alphas) / alphas).sqrt()
    assert torch.allclose(snr, 0.9 / (1 + sigmas) ** 2 + 0.1)
    assert snr[0] > 0.9 and snr[-1] < 0.11  # near 1 on clean steps, ~c on noisy ones


def test_debiased_estimation_weighs_by_one_over_root_snr_and_min_snr_caps():
    scheduler, t = sd_schedule(), torch.tensor([10, 300, 900])
    snr = signal_to_noise(scheduler, t)
    assert torch.allclose(debiased_weights(scheduler, t), 1 / snr.clamp(max=1000).sqrt())
    assert torch.allclose(min_snr_weights(scheduler, t, 5.0), snr.clamp(max=5.0) / snr)


def test_zero_terminal_snr_makes_the_last_step_pure_noise_and_weights_stay_finite():
    scheduler = with_zero_terminal_snr(sd_schedule())
    assert scheduler.alphas_cumprod[-1] == 0
    assert sd_schedule().alphas_cumprod[-1] > 0.004  # the usual schedule leaves signal at t = T
    last = torch.tensor([999])
    assert min_snr_weights(scheduler, last, 5.0).item() == 1.0  # the limit of min(SNR, 5) / SNR
    assert torch.isfinite(debiased_weights(scheduler, last)).all()


class RecordingUNet(nn.Module):
    """Predicts zeros and remembers the noisy latents it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, 4, 1)
        self.seen: torch.Tensor | None = None

    def forward(self, noisy, timesteps, states):
        self.seen = noisy
        return SimpleNamespace(sample=torch.zeros_like(noisy))


def test_ip_noise_gamma_perturbs_the_noisy_input_but_not_the_target():
    scheduler, unet = sd_schedule(), RecordingUNet()
    bundle = SimpleNamespace(unet=unet, noise_scheduler=scheduler, is_sdxl=False)
    mean, std = torch.randn(2, 4, 8, 8), torch.full((2, 4, 8, 8), 0.1)
    batch = {"latent_mean": mean, "latent_std": std, "is_reg": torch.tensor([False, False])}
    batch["encoder_hidden_states"] = torch.zeros(2, 77, 8)
    torch.manual_seed(3)
    loss = diffusion_loss(bundle, batch, training=TrainingConfig(ip_noise_gamma=0.5))
    torch.manual_seed(3)  # the same draws, in diffusion_loss's order
    latents = mean + std * torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    timesteps = torch.randint(0, 1000, (2,))
    extra = torch.randn(2, 4, 8, 8)
    assert torch.allclose(unet.seen, scheduler.add_noise(latents, noise + 0.5 * extra, timesteps))
    assert loss.item() == pytest.approx((noise**2).mean().item(), rel=1e-6)  # target: the plain noise
    random = perturbed_noise(noise, 0.5, random_strength=True)
    assert 0 < (random - noise).abs().max() and not torch.equal(random, noise + 0.5 * extra)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.loss_type=l3"], "l2, l1, huber, smooth_l1"),
        (["training.huber_c=0.3"], "apply to training.loss_type=huber or smooth_l1, not l2"),
        (["training.loss_type=huber", "training.huber_c=0"], "must be > 0"),
        (["training.ip_noise_gamma_random_strength=true"], "needs training.ip_noise_gamma > 0"),
        (["training.huber_schedule=cosine", "training.loss_type=huber"], "constant, exponential, snr"),
    ],
)
def test_wrong_loss_settings_are_refused_in_one_line(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", *overrides)


def test_loss_and_noise_options_through_python_m_train_are_recorded(tmp_path):
    options = [
        "training.loss_type=huber",
        "training.huber_schedule=exponential",
        "training.ip_noise_gamma=0.1",
    ]
    options += ["training.zero_terminal_snr=true", "training.debiased_estimation_loss=true"]
    result = run_train(tmp_path / "run", *QUICK, "eval.enabled=false", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "run" / "char_lora.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert (meta["ss_loss_type"], meta["ss_huber_schedule"], meta["ss_ip_noise_gamma"]) == (
        "huber",
        "exponential",
        "0.1",
    )
    assert (meta["ss_zero_terminal_snr"], meta["ss_debiased_estimation"]) == ("True", "True")


def test_v_pred_loss_scaled_like_noise_pred_weighs_by_snr_over_snr_plus_one():
    scheduler, t = sd_schedule(), torch.tensor([0, 400, 999])
    snr = signal_to_noise(scheduler, t).clamp(max=1000)
    assert torch.allclose(v_pred_like_noise_weights(scheduler, t), snr / (snr + 1))


@pytest.mark.slow  # make test-full: test_sd2_single_file trains a v base in the fast suite
def test_a_v_base_trains_on_v_and_says_so_and_the_scale_needs_one(tmp_path):
    options = [
        "eval.enabled=false",
        "model.v_parameterization=true",
        "training.scale_v_pred_loss_like_noise_pred=true",
    ]
    result = run_train(tmp_path / "run", *QUICK, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "run" / "char_lora.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert (meta["ss_v_parameterization"], meta["modelspec.prediction_type"]) == ("True", "v")
    assert meta["ss_scale_v_pred_loss_like_noise_pred"] == "True"
    refused = run_train(
        tmp_path / "eps", *QUICK, "eval.enabled=false", "training.scale_v_pred_loss_like_noise_pred=true"
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "scale_v_pred_loss_like_noise_pred=true is for bases that predict v" in refused.stderr
