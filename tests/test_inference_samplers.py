"""Sigma schedules, the eps denoiser, CFG and Euler against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from inference.denoisers import CFGDenoiser, EpsDenoiser
from inference.sampler_names import find_sampler
from inference.samplers import get_sigmas_karras, get_sigmas_normal, sample_euler, t_to_sigma
from inference.schedules import model_sigmas, sigma_to_t


def sd_alphas_cumprod() -> torch.Tensor:
    """SD 1.x training schedule written out: scaled-linear betas 0.00085 → 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


@pytest.fixture(scope="module")
def sigmas() -> torch.Tensor:
    return model_sigmas(sd_alphas_cumprod())


def test_model_sigmas_span_sd_range(sigmas):
    assert sigmas.shape == (1000,)
    assert sigmas[-1].item() == pytest.approx(14.6146, abs=1e-3)
    assert sigmas[0].item() == pytest.approx(0.0292, abs=1e-4)
    assert torch.all(sigmas[1:] > sigmas[:-1])


def test_normal_schedule_endpoints_and_length(sigmas):
    schedule = get_sigmas_normal(sigmas, 20)
    assert schedule.shape == (21,)
    assert schedule[0].item() == pytest.approx(14.6146, abs=1e-3)
    assert schedule[-2].item() == pytest.approx(0.0292, abs=1e-4)
    assert schedule[-1].item() == 0.0
    assert torch.all(schedule[1:] < schedule[:-1])


def test_normal_schedule_hits_integer_timesteps_exactly(sigmas):
    # 999 / 3 = 333: every timestep is an integer, so the sigmas are the model's own.
    schedule = get_sigmas_normal(sigmas, 4)
    torch.testing.assert_close(schedule[:-1], sigmas[[999, 666, 333, 0]], rtol=1e-6, atol=0)


def test_normal_schedule_interpolates_log_sigma(sigmas):
    # 5 steps: t = 999, 749.25, 499.5, 249.75, 0.
    schedule = get_sigmas_normal(sigmas, 5)
    log = sigmas.double().log()
    expected = math.exp(0.75 * log[749].item() + 0.25 * log[750].item())
    assert schedule[1].item() == pytest.approx(expected, rel=1e-5)
    assert schedule[2].item() == pytest.approx(math.sqrt(sigmas[499].item() * sigmas[500].item()), rel=1e-5)


@pytest.mark.parametrize("steps", [10, 28])
def test_normal_schedule_matches_diffusers_linspace_euler(steps, sigmas):
    # Diffusers interpolates sigma linearly; it agrees with log-interpolation when 999/(steps-1) is whole.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="linspace"
    )
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(
        get_sigmas_normal(sigmas, steps), scheduler.sigmas.float(), rtol=1e-5, atol=1e-6
    )


def test_sigma_to_t_inverts_t_to_sigma(sigmas):
    log_sigmas = sigmas.log()
    t = torch.tensor([0.0, 0.5, 10.25, 500.0, 998.75, 999.0])
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t, log_sigmas), log_sigmas), t, rtol=0, atol=2e-3)
    outside = sigma_to_t(torch.tensor([100.0, 1e-4]), log_sigmas)
    assert outside.tolist() == [999.0, 0.0]


def test_karras_schedule_by_hand():
    sigma_min, sigma_max, rho = 0.1, 10.0, 7.0
    middle = ((sigma_max ** (1 / rho) + sigma_min ** (1 / rho)) / 2) ** rho
    expected = torch.tensor([sigma_max, middle, sigma_min, 0.0])
    torch.testing.assert_close(
        get_sigmas_karras(3, sigma_min, sigma_max, rho), expected, rtol=1e-5, atol=1e-7
    )


class RecordingUnet:
    """Stands in for a UNet that predicts a constant eps and remembers its inputs."""

    dtype = torch.float32

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, encoder_hidden_states):
        self.calls.append((x, t, encoder_hidden_states))
        return SimpleNamespace(sample=torch.full_like(x, self.eps))


def test_eps_denoiser_scales_input_and_maps_sigma_to_timestep(sigmas):
    unet = RecordingUnet(eps=0.5)
    denoiser = EpsDenoiser(unet, sd_alphas_cumprod())
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    sigma = sigmas[[500, 120]]
    denoised = denoiser(x, sigma, torch.zeros(2, 77, 8))
    torch.testing.assert_close(denoised, x - 0.5 * sigma.reshape(-1, 1, 1, 1))
    x_in, t, _ = unet.calls[0]
    torch.testing.assert_close(x_in, x / (sigma**2 + 1).sqrt().reshape(-1, 1, 1, 1))
    torch.testing.assert_close(t, torch.tensor([500.0, 120.0]), rtol=0, atol=1e-3)
    assert denoiser.sigma_max == pytest.approx(14.6146, abs=1e-3)


def test_cfg_combines_cond_and_uncond_in_one_call():
    calls = []

    def denoiser(x, sigma, cond):
        calls.append(x.shape[0])
        # Denoised value = the mean of the conditioning, so cond and uncond are told apart.
        return torch.ones_like(x) * cond.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    guided = CFGDenoiser(
        denoiser, cond=torch.full((1, 77, 8), 3.0), uncond=torch.full((1, 77, 8), 1.0), scale=7.5
    )
    out = guided(torch.zeros(1, 4, 2, 2), torch.tensor([1.0]))
    torch.testing.assert_close(out, torch.full((1, 4, 2, 2), 1.0 + 7.5 * (3.0 - 1.0)))
    assert calls == [2]


def test_cfg_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="must match"):
        CFGDenoiser(lambda x, s, c: x, torch.zeros(1, 154, 8), torch.zeros(1, 77, 8), 7.0)


def test_euler_is_exact_for_a_constant_denoiser():
    # dx/dsigma = (x - c) / sigma is linear in sigma along each ray, so Euler has no error at all.
    generator = torch.Generator().manual_seed(1)
    target, x0 = torch.randn(1, 4, 2, 2, generator=generator), torch.randn(1, 4, 2, 2, generator=generator)
    schedule = get_sigmas_karras(6, 0.1, 10.0)
    seen = []
    out = sample_euler(lambda x, sigma: target, x0, schedule, callback=lambda info: seen.append(info["x"]))
    assert len(seen) == 6
    for i, x in enumerate(seen):
        torch.testing.assert_close(
            x - target, (x0 - target) * schedule[i + 1] / schedule[0], rtol=1e-5, atol=1e-6
        )
    torch.testing.assert_close(out, target, rtol=0, atol=1e-6)


def test_euler_converges_to_the_ode_solution():
    # Unit-Gaussian data has the ideal denoiser x / (1 + sigma^2); its flow is x * sqrt((1+s^2)/(1+s0^2)).
    x0 = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2)) * 10.0
    schedule = get_sigmas_karras(400, 0.002, 10.0)
    out = sample_euler(lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2), x0, schedule)
    torch.testing.assert_close(out, x0 / math.sqrt(1 + 10.0**2), rtol=5e-3, atol=1e-4)


def test_sampler_registry():
    assert find_sampler("euler").function is sample_euler
    assert find_sampler("dpmpp_9m") is None
