"""DPM fast, DPM adaptive, DPM++ 3M SDE, Restart and DDIM CFG++ (A1111's k-diffusion / timestep samplers).

The Gaussian toy of test_samplers_convergence (exact denoiser, closed-form ODE) checks convergence; diffusers
is the independent reference for DPM++ 3M's deterministic part; the rest is checked by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from inference.denoisers import CFGDenoiser
from inference.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from inference.noise import PerImageNoise
from inference.sampler_names import SAMPLER_SPECS, find_sampler, get_sampler_sigmas, run_sampler
from inference.samplers import sample_heun
from inference.samplers_extra import restart_steps, sample_ddim_cfgpp, sample_dpmpp_3m_sde, sample_restart
from inference.schedules import get_sigmas, get_sigmas_karras, model_sigmas
from inference.timestep_samplers import ddim_timesteps, sample_ddim
from tests.test_samplers_convergence import MU, S, gaussian_denoiser, vp_eps


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return model_sigmas(torch.cumprod(1 - betas, dim=0).float())


def counting(calls: list[float]):
    def denoise(x, sigma):
        calls.append(float(sigma[0]))
        return gaussian_denoiser(x, sigma)

    return denoise


def exact_flow(x: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """Where the toy's probability-flow ODE takes x from sigma `start` to sigma `end`."""
    return MU + (x - MU) * math.sqrt(S**2 + end**2) / math.sqrt(S**2 + start**2)


def test_a1111_list_order_and_options():
    """modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py and sd_samplers_lcm.py of v1.10.1."""
    assert [spec.name for spec in SAMPLER_SPECS] == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
        "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
        "PLMS", "UniPC", "LCM",
    ]  # fmt: skip
    three_m, restart = find_sampler("k_dpmpp_3m_sde"), find_sampler("restart")
    assert (three_m.scheduler, three_m.discard_penultimate_sigma, three_m.noise) == (
        "exponential",
        True,
        "brownian",
    )
    assert (restart.scheduler, restart.second_order, restart.noise) == ("karras", True, "ancestral")
    assert find_sampler("k_dpm_fast").model_range and find_sampler("k_dpm_ad").model_range
    assert (
        find_sampler("ddim_cfgpp").cfg_scale_multiplier == 1 / 12.5
        and find_sampler("DDIM").kind == "timesteps"
    )


# Third order: the error falls fast with the calls (the toy spans log-sigma from 2.7 to -3.5).
@pytest.mark.parametrize(("calls", "tolerance"), [(12, 0.1), (30, 1e-3), (120, 1e-4)])
def test_dpm_fast_solves_the_ode_to_sigma_min_in_exactly_its_calls(calls, tolerance, table):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * table[-1]
    seen: list[float] = []
    sigmas = get_sigmas("Uniform", calls, table)
    out = sample_dpm_fast(counting(seen), x, sigmas, eta=0.0)
    assert len(seen) == calls
    assert seen[0] == pytest.approx(table[-1].item(), rel=1e-5)
    expected = exact_flow(x, table[-1].item(), table[0].item())
    assert (out - expected).abs().max().item() < tolerance


def test_dpm_adaptive_solves_the_ode_to_its_tolerance(table):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * table[-1]
    expected = exact_flow(x, table[-1].item(), table[0].item())
    errors, counts = [], []
    for rtol, atol in [(0.05, 0.0078), (1e-3, 1e-4), (1e-4, 1e-5)]:  # A1111's defaults first
        seen: list[float] = []
        out = sample_dpm_adaptive(
            counting(seen), x, get_sigmas("Uniform", 3, table), eta=0.0, rtol=rtol, atol=atol
        )
        assert len(seen) % 3 == 0  # three calls a step, kept or not, whatever the step count asked
        errors.append((out - expected).abs().max().item())
        counts.append(len(seen))
    assert errors[0] < 0.06 and errors[1] < 0.005 and errors[2] < 5e-4
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("name", ["DPM fast", "DPM adaptive"])
def test_dpm_fast_and_adaptive_use_the_model_range_whatever_the_schedule(name, table):
    """A1111's txt2img passes the model's sigma_min / sigma_max; the schedule only scales the start noise."""
    spec = find_sampler(name)

    def run(schedule: str = "Automatic", seeds=(3, 4)) -> torch.Tensor:
        return run_sampler(
            spec, gaussian_denoiser, PerImageNoise.from_seeds(seeds, (4, 8, 8)), 10, table, schedule
        )

    uniform = run("Automatic")
    assert torch.equal(uniform, run("Exponential"))  # both start at sigma_max
    assert torch.equal(uniform, run("Automatic"))  # deterministic for the seeds
    assert not torch.equal(uniform, run(seeds=(3, 5)))
    # img2img's call: from the schedule's first to its last nonzero sigma (sigmas[0] and sigmas[-2]).
    part = get_sampler_sigmas(spec, "Karras", 10, table)[4:]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * part[0]
    by_ends = spec.function(gaussian_denoiser, x, part, eta=0.0)
    by_range = spec.function(
        gaussian_denoiser, x, part, eta=0.0, sigma_range=(part[-2].item(), part[0].item())
    )
    assert torch.equal(by_ends, by_range)


def test_dpmpp_3m_sde_without_noise_matches_diffusers_dpmsolver_3m(table):
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        solver_order=3,
        use_karras_sigmas=True,  # uneven steps, so the step-size ratios matter
        timestep_spacing="linspace",
    )
    scheduler.set_timesteps(20)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(vp_eps(x, scheduler.sigmas[i].item()), t, x).prev_sample
    sigmas = get_sigmas("Karras", 20, table)
    ours = sample_dpmpp_3m_sde(
        gaussian_denoiser, noise * math.sqrt(1 + sigmas[0].item() ** 2), sigmas, eta=0.0
    )
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_dpmpp_3m_sde_noise_by_hand_on_one_step():
    """A first step (no history): x decays by exp(-2h) towards x0, plus sigma_next sqrt(1 - exp(-2h)) noise."""
    x = torch.full((1, 1, 2, 2), 3.0)
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    fixed = torch.full((1, 1, 2, 2), 0.5)
    out = sample_dpmpp_3m_sde(
        lambda x, s: torch.zeros_like(x), x, sigmas[:2], noise_sampler=lambda a, b: fixed
    )
    h = math.log(2.0)
    expected = math.exp(-2 * h) * 3.0 + 1.0 * math.sqrt(1 - math.exp(-2 * h)) * 0.5
    torch.testing.assert_close(out, torch.full_like(x, expected))


def test_restart_under_20_steps_is_heun(table):
    sigmas = get_sigmas("Karras", 12, table)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7)) * sigmas[0]
    assert torch.equal(
        sample_restart(gaussian_denoiser, x, sigmas), sample_heun(gaussian_denoiser, x, sigmas)
    )


@pytest.mark.parametrize(
    ("steps", "main", "extra", "times"), [(20, 11, 9, 1), (36, 18, 9, 2), (40, 20, 10, 2)]
)
def test_restart_schedule_jumps_back_up(steps, main, extra, times, table):
    sigmas = get_sigmas("Karras", steps, table)
    pairs = restart_steps(sigmas)
    assert len(pairs) == steps  # as many Heun steps as asked for
    fresh = get_sigmas_karras(main, sigmas[-2].item(), sigmas[0].item())
    low = int((fresh - 0.1).abs().argmin())
    high = int((fresh - 2).abs().argmin())
    again = get_sigmas_karras(extra + 1, fresh[low].item(), fresh[high].item())[:-1]
    expected = [(fresh[i], fresh[i + 1]) for i in range(low)]
    expected += list(zip(again[:-1], again[1:], strict=True)) * times
    expected += [(fresh[i], fresh[i + 1]) for i in range(low, main)]
    assert [(float(a), float(b)) for a, b in pairs] == [(float(a), float(b)) for a, b in expected]
    rises = [i for i in range(1, len(pairs)) if pairs[i][0] > pairs[i - 1][1]]
    assert len(rises) == times


def test_restart_adds_noise_at_each_jump(table):
    sigmas = get_sigmas("Karras", 20, table)
    draws: list[tuple[float, float]] = []

    def noise(sigma, last):
        draws.append((float(sigma), float(last)))
        return torch.zeros(1, 4, 8, 8)

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8)) * sigmas[0]
    out = sample_restart(gaussian_denoiser, x, sigmas, noise_sampler=noise)
    assert len(draws) == 1 and draws[0][0] == pytest.approx(2.0, rel=0.3) and draws[0][1] < 0.2
    assert out.mean().item() == pytest.approx(MU, abs=0.05)


class SplitDenoiser:
    """D(x, sigma, cond): the toy's denoiser shifted by each row's conditioning value."""

    def __call__(self, x, sigma, cond):
        return gaussian_denoiser(x, sigma) + cond.reshape(-1, 1, 1, 1)


def test_ddim_cfgpp_renoises_along_the_unconditional_prediction(table):
    cond, uncond = torch.full((1, 1, 1), 0.3), torch.full((1, 1, 1), -0.1)
    guided = CFGDenoiser(SplitDenoiser(), cond, uncond, 7.5 / 12.5)
    timesteps = ddim_timesteps(4)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    out = sample_ddim_cfgpp(guided, x, timesteps[-2:], table)  # one step: 751 → 501
    sigma, a_next = table[751].item(), 1 / (1 + table[501].item() ** 2)
    x_sigma = x * math.sqrt(1 + sigma**2)
    base = gaussian_denoiser(x_sigma, torch.full((1,), sigma))
    x0 = base - 0.1 + (0.3 + 0.1) * 0.6
    eps_uncond = (x_sigma - (base - 0.1)) / sigma
    torch.testing.assert_close(out, math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps_uncond)
    assert torch.equal(guided.last_uncond, SplitDenoiser()(x_sigma, torch.full((1,), sigma), uncond))
    # Without guidance the prediction is its own unconditional one: plain DDIM.
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(10))
    assert torch.equal(
        sample_ddim_cfgpp(gaussian_denoiser, x, ddim_timesteps(10), table),
        sample_ddim(gaussian_denoiser, x, ddim_timesteps(10), table),
    )
