"""Schedule types: A1111's formulas by hand, diffusers where it has the same schedule, the step arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from inference.samplers import get_sigmas_karras as karras_from_samplers
from inference.samplers import get_sigmas_normal as normal_from_samplers
from inference.schedules import (
    AYS_SD15,
    SCHEDULES,
    beta_cdf,
    beta_ppf,
    find_schedule,
    get_sigmas,
    get_sigmas_karras,
    get_sigmas_normal,
    model_sigmas,
)
from inference.timestep_samplers import lcm_sigma_table

LABELS = [schedule.label for schedule in SCHEDULES]


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    """SD 1.x noise levels: scaled-linear betas 0.00085 → 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return model_sigmas(torch.cumprod(1 - betas, dim=0).float())


def diffusers_sigmas(steps: int, **options) -> torch.Tensor:
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="linspace",
        **options,
    )
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float()


def test_old_names_stay_importable_from_samplers():
    assert karras_from_samplers is get_sigmas_karras
    assert normal_from_samplers is get_sigmas_normal


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_every_schedule_is_decreasing_and_ends_in_zero(label, steps, table):
    sigmas = get_sigmas(label, steps, table)
    expected_length = len(range(1, 1000, 1000 // steps)) + 1 if label == "DDIM" else steps + 1
    assert sigmas.shape == (expected_length,)
    assert sigmas.dtype == torch.float32
    # KL Optimal ends at sigma_min; Align Your Steps starts at its list's 14.615, whatever the model's.
    assert sigmas[-1].item() == (pytest.approx(table[0].item()) if label == "KL Optimal" else 0.0)
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert sigmas[0].item() <= (14.615 if label == "Align Your Steps" else table[-1].item() * (1 + 1e-6))


@pytest.mark.parametrize("steps", [10, 28])
@pytest.mark.parametrize(
    ("label", "options"),
    [
        ("Uniform", {}),
        ("Karras", {"use_karras_sigmas": True}),
        ("Exponential", {"use_exponential_sigmas": True}),
    ],
)
def test_schedules_match_diffusers(label, options, steps, table):
    # Uniform matches only when 999/(steps-1) is whole: diffusers interpolates sigma, we log-sigma.
    torch.testing.assert_close(
        get_sigmas(label, steps, table), diffusers_sigmas(steps, **options), rtol=2e-5, atol=1e-6
    )


def test_beta_schedule_matches_diffusers(table):
    pytest.importorskip("scipy")  # diffusers computes the Beta quantiles with scipy
    torch.testing.assert_close(
        get_sigmas("Beta", 12, table), diffusers_sigmas(12, use_beta_sigmas=True), rtol=1e-5, atol=1e-6
    )


def test_automatic_uniform_and_normal_agree_over_the_full_range(table):
    uniform = get_sigmas("Uniform", 13, table)
    torch.testing.assert_close(get_sigmas("Automatic", 13, table), uniform, rtol=0, atol=0)
    torch.testing.assert_close(get_sigmas("Normal", 13, table), uniform, rtol=1e-6, atol=0)
    torch.testing.assert_close(get_sigmas_normal(table, 13), uniform, rtol=1e-6, atol=0)


def test_normal_takes_a_narrower_range(table):
    sigmas = get_sigmas("Normal", 5, table, sigma_min=0.1, sigma_max=10.0)
    assert sigmas[0].item() == pytest.approx(10.0, rel=1e-5)
    assert sigmas[-2].item() == pytest.approx(0.1, rel=1e-5)


def test_sgm_uniform_drops_the_last_of_steps_plus_one_timesteps(table):
    # 9 steps: timesteps linspace(999, 0, 10)[:-1] = 999, 888, ..., 111, all whole.
    sigmas = get_sigmas("SGM Uniform", 9, table)
    torch.testing.assert_close(sigmas[:-1], table[list(range(999, 0, -111))], rtol=1e-6, atol=0)
    assert get_sigmas("SGMUniform", 9, table).equal(sigmas)


def test_karras_polyexponential_by_hand(table):
    lo, hi = table[0].item(), table[-1].item()
    karras = get_sigmas("Karras", 3, table)
    assert karras[1].item() == pytest.approx(((hi ** (1 / 7) + lo ** (1 / 7)) / 2) ** 7, rel=1e-5)
    # rho 1 (the default) is the exponential schedule; rho 2 bends it towards small sigmas.
    torch.testing.assert_close(get_sigmas("Polyexponential", 6, table), get_sigmas("Exponential", 6, table))
    poly = get_sigmas("Polyexponential", 3, table, rho=2.0)
    assert poly[1].item() == pytest.approx(
        math.exp(0.25 * (math.log(hi) - math.log(lo)) + math.log(lo)), rel=1e-5
    )
    assert get_sigmas("Karras", 4, table, sigma_min=0.1, sigma_max=10.0)[[0, 3]].tolist() == pytest.approx(
        [10, 0.1]
    )


def test_simple_and_ddim_pick_table_entries(table):
    torch.testing.assert_close(
        get_sigmas("Simple", 4, table)[:-1], table[[999, 749, 499, 249]], rtol=0, atol=0
    )
    ddim = get_sigmas("DDIM", 20, table)
    torch.testing.assert_close(ddim[:-1], table[list(range(951, 0, -50))], rtol=0, atol=0)
    assert len(get_sigmas("DDIM", 30, table)) == 32  # 1000 // 30 = 33 → 31 sigmas, as in A1111


def test_beta_schedule_by_hand(table):
    lo, hi = table[0].item(), table[-1].item()
    sigmas = get_sigmas("Beta", 5, table)
    # Symmetric alpha = beta: the middle quantile is 0.5, so the middle sigma is the midpoint.
    assert sigmas[[0, 2, 4]].tolist() == pytest.approx([hi, (lo + hi) / 2, lo], rel=1e-6)
    assert sigmas[1].item() == pytest.approx(lo + beta_ppf(0.75, 0.6, 0.6) * (hi - lo), rel=1e-6)


@pytest.mark.parametrize("p", [0.001, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_beta_quantiles_against_closed_forms(p):
    assert beta_ppf(p, 0.5, 0.5) == pytest.approx(math.sin(math.pi * p / 2) ** 2, abs=1e-10)  # arcsine law
    assert beta_ppf(p, 2.0, 1.0) == pytest.approx(math.sqrt(p), abs=1e-10)
    assert beta_ppf(p, 1.0, 3.0) == pytest.approx(1 - (1 - p) ** (1 / 3), abs=1e-10)
    assert beta_cdf(beta_ppf(p, 0.6, 0.6), 0.6, 0.6) == pytest.approx(p, abs=1e-12)
    assert beta_ppf(p, 0.6, 0.6) + beta_ppf(1 - p, 0.6, 0.6) == pytest.approx(1.0, abs=1e-10)


def test_discarding_the_penultimate_sigma_keeps_steps_plus_one(table):
    sigmas = get_sigmas("Karras", 20, table, discard_penultimate_sigma=True)
    full = get_sigmas("Karras", 21, table)
    assert sigmas.shape == (21,)
    torch.testing.assert_close(sigmas, torch.cat([full[:-2], full[-1:]]), rtol=0, atol=0)


def test_lcm_table_and_schedule(table):
    lcm = lcm_sigma_table(table)
    torch.testing.assert_close(lcm, table[19::20], rtol=0, atol=0)
    # A1111's LCM default: timesteps linspace(999, 19, n) on LCM's grid = linspace(49, 0, n) on its table.
    torch.testing.assert_close(
        get_sigmas("Automatic", 8, lcm)[:-1], lcm[list(range(49, -1, -7))], rtol=1e-6, atol=0
    )


def test_schedule_lookup_and_unknown_names(table):
    assert find_schedule("karras").label == "Karras"
    assert find_schedule("SGMUNIFORM").label == "SGM Uniform"
    assert find_schedule("sgm_uniform").label == "SGM Uniform"
    assert find_schedule("align_your_steps").label == "Align Your Steps"
    assert find_schedule("KL OPTIMAL").label == "KL Optimal"
    assert find_schedule("AYS") is None  # A1111 has no such alias
    with pytest.raises(ValueError, match="unknown schedule type 'Wobbly'.*Karras"):
        get_sigmas("Wobbly", 10, table)


def test_a1111_schedule_list_order():
    """modules/sd_schedulers.py's list order (old combined names are cut in this order)."""
    assert LABELS == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    ]  # fmt: skip


def test_align_your_steps_uses_the_sd15_list_at_ten_steps(table):
    sigmas = get_sigmas("Align Your Steps", 11, table)
    expected = torch.tensor(
        [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029, 0.0]
    )
    torch.testing.assert_close(sigmas, expected, rtol=0, atol=0)


def test_align_your_steps_interpolates_log_sigma(table):
    # 21 values over the 11 of the list: the even ones are the list, the odd ones halfway in log-sigma.
    sigmas = get_sigmas("Align Your Steps", 21, table).double()
    listed = torch.tensor(AYS_SD15, dtype=torch.float64)
    torch.testing.assert_close(sigmas[0:-1:2], listed, rtol=1e-6, atol=0)
    torch.testing.assert_close(sigmas[1:-1:2], (listed[:-1] * listed[1:]).sqrt(), rtol=1e-6, atol=0)
    assert sigmas[-1] == 0
    # 5 values: positions 0, .25, .5, .75, 1 along the list = list indices 0, 2.5, 5, 7.5, 10.
    five = get_sigmas("Align Your Steps", 5, table).double()
    by_hand = [14.615, math.sqrt(3.861 * 2.697), 1.396, math.sqrt(0.652 * 0.399), 0.029, 0.0]
    torch.testing.assert_close(five, torch.tensor(by_hand, dtype=torch.float64), rtol=1e-6, atol=0)
    assert get_sigmas("align_your_steps", 1, table).tolist() == pytest.approx([0.029, 0])


def test_kl_optimal_by_hand(table):
    low, high = table[0].item(), table[-1].item()
    sigmas = get_sigmas("KL Optimal", 8, table).double()
    angles = torch.linspace(math.atan(high), math.atan(low), 9, dtype=torch.float64)
    torch.testing.assert_close(sigmas, angles.tan(), rtol=1e-5, atol=0)
    assert sigmas[-1].item() == pytest.approx(low, rel=1e-5)  # no final 0
    # The sampler's range options move both ends.
    narrow = get_sigmas("KL Optimal", 4, table, sigma_min=0.5, sigma_max=5.0).double()
    assert narrow[0].item() == pytest.approx(5.0, rel=1e-6) and narrow[-1].item() == pytest.approx(
        0.5, rel=1e-6
    )
