"""Every sampler on a Gaussian toy with an exact denoiser, against diffusers, and per-image noise.

Toy: data x0 ~ N(MU, S²) per element, so D(x, sigma) = (S² x + sigma² MU) / (S² + sigma²) exactly and the
probability-flow ODE is solved in closed form: x(sigma) - MU scales with sqrt(S² + sigma²).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from inference.denoisers import EpsDenoiser
from inference.noise import BrownianNoise, PerImageNoise
from inference.sampler_names import SAMPLER_SPECS, find_sampler, get_sampler_sigmas, run_sampler
from inference.samplers import ancestral_step, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler
from inference.schedules import get_sigmas, model_sigmas
from inference.timestep_samplers import LCMDenoiser, ddim_timesteps, sample_ddim, sample_plms, sample_unipc

MU, S = 0.5, 0.5
SHAPE = (4, 32, 32)
SEEDS = [11, 12, 13, 14]
ODE = [spec for spec in SAMPLER_SPECS if spec.noise == "none"]
# First-order samplers need more steps for the same accuracy; LCM samples in a few.
STEPS = {"Euler a": 400, "Euler": 200, "DDIM": 200, "DDIM CFG++": 200, "UniPC": 100, "LCM": 4}
# About twice the error of a correct sampler at those steps (the floor, 0.004, is A1111's last jump to 0).
PATH_TOLERANCE = {"Euler": 0.06, "DDIM": 0.05, "DDIM CFG++": 0.05, "UniPC": 0.03, "PLMS": 0.025}
# DPM adaptive sizes its steps by one error norm over the whole batch, so in A1111 too an image depends on
# what shares its batch.
BATCH_INDEPENDENT = [spec for spec in SAMPLER_SPECS if spec.name != "DPM adaptive"]


@pytest.fixture(scope="module")
def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


@pytest.fixture(scope="module")
def table(alphas_cumprod) -> torch.Tensor:
    return model_sigmas(alphas_cumprod)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    variance = sigma.reshape(-1, 1, 1, 1) ** 2
    return (S**2 * x + variance * MU) / (S**2 + variance)


def gaussian_flow(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The toy's consistency function: where the ODE takes x at sigma when it reaches sigma = 0."""
    return MU + (x - MU) * S / (S**2 + sigma.reshape(-1, 1, 1, 1) ** 2) ** 0.5


def toy_for(spec):
    # LCM samples a consistency model, whose exact form here is the flow map, not the posterior mean.
    return gaussian_flow if spec.kind == "lcm" else gaussian_denoiser


def start_and_end(spec, steps: int, table: torch.Tensor) -> tuple[float, float, float]:
    """(start sigma, final sigma, output scale): timestep samplers start at unit noise and return VP latents."""
    if spec.kind != "timesteps":
        return float(get_sampler_sigmas(spec, "Automatic", steps, table)[0]), 0.0, 1.0
    timesteps = ddim_timesteps(steps)
    first, last = (999, 0) if spec.name == "UniPC" else (int(timesteps[-1]), int(timesteps[0]))
    end = float(table[last])
    return float(table[first]), end, 1 / math.sqrt(1 + end**2)


def run(spec, seeds, steps, table, shape=SHAPE):
    return run_sampler(spec, toy_for(spec), PerImageNoise.from_seeds(seeds, shape), steps, table)


def with_schedules(specs):
    """Each sampler on its own default schedule, and the sigma samplers on Karras too (uneven steps)."""
    return [pytest.param(spec, "Automatic", id=spec.name) for spec in specs] + [
        pytest.param(spec, "Karras", id=f"{spec.name}-Karras") for spec in specs if spec.kind == "sigmas"
    ]


@pytest.mark.parametrize(("spec", "schedule"), with_schedules(SAMPLER_SPECS))
def test_samples_have_the_data_mean_and_spread(spec, schedule, table):
    steps = STEPS.get(spec.name, 50)
    noise = PerImageNoise.from_seeds(SEEDS, SHAPE)
    out = run_sampler(spec, toy_for(spec), noise, steps, table, schedule)
    _, end, scale = start_and_end(spec, steps, table)
    # Starting from noise * sigma_max with mean 0 (not MU) leaves a bias of about MU * S / sigma_max = 0.017.
    assert out.mean().item() / scale == pytest.approx(MU, abs=0.03)
    assert out.std().item() / scale == pytest.approx(math.sqrt(S**2 + end**2), rel=0.03)


@pytest.mark.parametrize("spec", ODE, ids=lambda spec: spec.name)
def test_deterministic_samplers_follow_the_exact_ode(spec, table):
    steps = STEPS.get(spec.name, 50)
    out = run(spec, SEEDS, steps, table)
    start, end, scale = start_and_end(spec, steps, table)
    noise = PerImageNoise.from_seeds(SEEDS, SHAPE).randn()
    x_start = noise * (start if spec.kind != "timesteps" else math.sqrt(1 + start**2))
    expected = scale * (MU + (x_start - MU) * math.sqrt(S**2 + end**2) / math.sqrt(S**2 + start**2))
    assert (out - expected).abs().max().item() < PATH_TOLERANCE.get(spec.name, 0.01)


@pytest.mark.parametrize("spec", BATCH_INDEPENDENT, ids=lambda spec: spec.name)
def test_image_does_not_depend_on_its_batch_and_seeds_repeat(spec, table):
    batch = run(spec, SEEDS, 6, table, shape=(4, 8, 8))
    for i, seed in enumerate(SEEDS):
        assert torch.equal(batch[i], run(spec, [seed], 6, table, shape=(4, 8, 8))[0]), f"image {i}"
    assert torch.equal(batch, run(spec, SEEDS, 6, table, shape=(4, 8, 8)))


def test_ddim_makes_one_call_fewer_than_its_timesteps(table):
    calls = []

    def counting(x, sigma):
        calls.append(sigma[0].item())
        return gaussian_denoiser(x, sigma)

    ddim = find_sampler("DDIM")
    run_sampler(ddim, counting, PerImageNoise.from_seeds([1], (4, 4, 4)), 20, table)
    # Timesteps 1, 51, ..., 951; the loop stops at t = 1 without a call there.
    assert ddim_timesteps(20).tolist() == list(range(1, 1000, 50))
    assert len(calls) == 19
    assert calls[0] == pytest.approx(table[951].item()) and calls[-1] == pytest.approx(table[51].item())
    calls.clear()
    run_sampler(ddim, counting, PerImageNoise.from_seeds([1], (4, 4, 4)), 30, table)
    assert len(calls) == 30  # 1000 // 30 = 33 gives 31 timesteps


def test_second_order_and_multistep_call_counts(table):
    counts = {}
    for name, steps in [("Heun", 10), ("DPM2", 10), ("PLMS", 10), ("UniPC", 10), ("DPM++ 2M", 10)]:
        calls = []
        spec = find_sampler(name)
        run_sampler(spec, lambda x, s, calls=calls: calls.append(1) or gaussian_denoiser(x, s),
                    PerImageNoise.from_seeds([1], (4, 4, 4)), steps, table)  # fmt: skip
        counts[name] = len(calls)
    # Heun and DPM2 make one call on their last step. 10 steps are 10 timesteps for the timestep samplers:
    # PLMS steps between them (9) with one extra call on its first step, UniPC calls once per timestep.
    assert counts == {"Heun": 19, "DPM2": 19, "PLMS": 10, "UniPC": 10, "DPM++ 2M": 10}


class FakeUnet:
    """A deterministic stand-in for the UNet: eps from the scaled input and the timestep."""

    dtype = torch.float32

    def __init__(self) -> None:
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x, t, encoder_hidden_states):
        self.timesteps.append(torch.as_tensor(t))
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1)
        return SimpleNamespace(sample=0.6 * x + 0.2 * torch.sin(3 * x) * (t / 1000) + 0.05)


@pytest.mark.parametrize(
    ("label", "options"),
    [
        ("Uniform", {}),
        ("Karras", {"use_karras_sigmas": True}),
        ("Exponential", {"use_exponential_sigmas": True}),
    ],
)
def test_euler_matches_diffusers_step_for_step(label, options, alphas_cumprod, table):
    steps = 10  # 999 / 9 = 111: Uniform's timesteps are whole, where diffusers' linear sigmas agree
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="linspace",
        **options,
    )
    scheduler.set_timesteps(steps)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = FakeUnet()(scheduler.scale_model_input(latents, t), t, None).sample
        latents = scheduler.step(eps, t, latents).prev_sample

    denoiser = EpsDenoiser(FakeUnet(), alphas_cumprod)
    sigmas = get_sigmas(label, steps, table)
    ours = sample_euler(lambda x, sigma: denoiser(x, sigma, torch.zeros(2, 1, 1)), noise * sigmas[0], sigmas)
    torch.testing.assert_close(ours, latents, rtol=0, atol=1e-4)


def vp_eps(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The toy's eps prediction for VP latents x at noise level sigma."""
    x_sigma = x * math.sqrt(1 + sigma**2)
    return (x_sigma - gaussian_denoiser(x_sigma, torch.full((x.shape[0],), sigma))) / sigma


def test_ddim_matches_diffusers_first_19_steps(table):
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    scheduler.set_timesteps(20)  # 951, 901, ..., 1; A1111 stops before the step from t = 1
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    x = noise
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(vp_eps(x, table[t].item()), t, x).prev_sample
    torch.testing.assert_close(
        sample_ddim(gaussian_denoiser, noise, ddim_timesteps(20), table), x, rtol=0, atol=1e-5
    )


def test_unipc_matches_diffusers_bh1_on_a_whole_timestep_grid(table):
    # 9 UniPC steps: A1111's time-uniform grid is t = 999, 888, ..., 0, diffusers' "linspace" one too.
    scheduler = UniPCMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        solver_type="bh1",
        solver_order=3,
        timestep_spacing="linspace",
        final_sigmas_type="sigma_min",
    )
    scheduler.set_timesteps(9)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(vp_eps(x, table[t].item()), t, x).prev_sample
    ours = sample_unipc(gaussian_denoiser, noise, torch.zeros(9), table)  # only len(timesteps) matters
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_dpmpp_2m_karras_matches_diffusers(table):
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        use_karras_sigmas=True,
        timestep_spacing="linspace",
    )
    scheduler.set_timesteps(20)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(vp_eps(x, scheduler.sigmas[i].item()), t, x).prev_sample
    sigmas = get_sigmas("Karras", 20, table)
    ours = sample_dpmpp_2m(gaussian_denoiser, noise * math.sqrt(1 + sigmas[0].item() ** 2), sigmas)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_plms_matches_diffusers_pndm_without_runge_kutta(table):
    # PNDM with skip_prk_steps is the same pseudo improved Euler start, then Adams-Bashforth 2, 3, 4.
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, skip_prk_steps=True
    )
    scheduler.set_timesteps(20)  # calls at 951, 901, 901, 851, ..., 51, 1: A1111 stops before the one at 1
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    x = noise
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(vp_eps(x, table[t].item()), t, x).prev_sample
    torch.testing.assert_close(
        sample_plms(gaussian_denoiser, noise, ddim_timesteps(20), table), x, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_matches_diffusers_on_the_same_noise(solver_type, table):
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        algorithm_type="sde-dpmsolver++",
        solver_type=solver_type,
        use_karras_sigmas=True,  # uneven steps, so the step-size ratio matters
        timestep_spacing="linspace",
    )
    scheduler.set_timesteps(20)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    x, generator = noise, torch.Generator().manual_seed(10)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(vp_eps(x, scheduler.sigmas[i].item()), t, x, generator=generator).prev_sample
    sigmas, replay = get_sigmas("Karras", 20, table), torch.Generator().manual_seed(10)
    ours = sample_dpmpp_2m_sde(
        gaussian_denoiser,
        noise * math.sqrt(1 + sigmas[0].item() ** 2),
        sigmas,
        noise_sampler=lambda sigma, sigma_next: torch.randn(2, 4, 8, 8, generator=replay),
        solver_type=solver_type,
    )
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_ancestral_step_by_hand():
    down, up = ancestral_step(torch.tensor(2.0), torch.tensor(1.0))
    assert (down.item(), up.item()) == pytest.approx((0.5, math.sqrt(3) / 2))  # up² = 1 * (4 - 1) / 4
    down, up = ancestral_step(torch.tensor(2.0), torch.tensor(1.0), eta=0.5)
    assert (down.item(), up.item()) == pytest.approx((math.sqrt(1 - 3 / 16), math.sqrt(3) / 4))
    assert ancestral_step(torch.tensor(2.0), torch.tensor(1.0), eta=0.0) == (torch.tensor(1.0), 0.0)


def test_lcm_denoiser_uses_the_original_timesteps(alphas_cumprod, table):
    unet = FakeUnet()
    lcm = LCMDenoiser(EpsDenoiser(unet, alphas_cumprod))
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(7))
    sigma = torch.stack([table[500], table[998]])  # nearest LCM timesteps 499 and 999
    out = lcm(x, sigma, torch.zeros(2, 1, 1))
    assert unet.timesteps[0].tolist() == [499.0, 999.0]
    x0 = EpsDenoiser(FakeUnet(), alphas_cumprod).denoise_at(
        x, sigma, torch.tensor([499.0, 999.0]), torch.zeros(2, 1, 1)
    )
    scaled = torch.tensor([4990.0, 9990.0]).reshape(-1, 1, 1, 1)
    expected = scaled / (scaled**2 + 0.25).sqrt() * x0 + 0.25 / (scaled**2 + 0.25) * x
    torch.testing.assert_close(out, expected)


def test_per_image_noise_stacks_each_generators_stream():
    noise = PerImageNoise.from_seeds([5, 6], (2, 3))
    first, second = noise.randn(), noise(torch.tensor(2.0), torch.tensor(1.0))
    generator = torch.Generator().manual_seed(6)
    assert torch.equal(first[1], torch.randn(2, 3, generator=generator))
    assert torch.equal(second[1], torch.randn(2, 3, generator=generator))

    class Counting:  # any object with .randn(shape) will do
        def randn(self, shape):
            return torch.full(shape, 7.0)

    assert PerImageNoise([Counting()], (2,)).randn().tolist() == [[7.0, 7.0]]


def test_brownian_noise_correlates_nested_steps():
    brownian = BrownianNoise(PerImageNoise.from_seeds(range(4000), ()))
    first = brownian(torch.tensor(4.0), torch.tensor(3.0))  # W(3) - W(4)
    whole = brownian(torch.tensor(4.0), torch.tensor(1.0))  # W(1) - W(4), containing the first
    later = brownian(torch.tensor(1.0), torch.tensor(0.5))
    for draw in (first, whole, later):
        assert draw.std().item() == pytest.approx(1.0, abs=0.05)
    assert torch.corrcoef(torch.stack([first, whole]))[0, 1].item() == pytest.approx(
        math.sqrt(1 / 3), abs=0.05
    )
    assert abs(torch.corrcoef(torch.stack([whole, later]))[0, 1].item()) < 0.05
    with pytest.raises(ValueError, match="only goes forward"):
        brownian(torch.tensor(3.0), torch.tensor(2.0))
