"""A1111's DPM++ 3M SDE, Restart and DDIM CFG++, in the conventions of `inference.samplers` and
`inference.timestep_samplers` (DDIM CFG++ is a timestep sampler: it starts from unit noise at
`ddim_timesteps(steps)` and returns VP latents, as DDIM does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inference.samplers import Callback, Denoise, NoiseSampler, _noise_or_default, _report
from inference.schedules import get_sigmas_karras


def sample_dpmpp_3m_sde(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE: exponential-integrator steps on x0 with first and second differences of the
    last three x0 predictions; noise sigma_next * sqrt(1 - exp(-2 eta h)) a step; x0 at the last step."""
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:  # third order: the x0 differences of the last two steps, in units of h
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:  # second order on the second step
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        _report(callback, i, x, sigmas[i], denoised)
    return x


def restart_steps(sigmas: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The (sigma, sigma_next) steps Restart takes for `sigmas` (steps+1,), as A1111's `restart_sampler`.

    Under 20 steps: the schedule as given. From 20: a Karras schedule between sigmas[0] and sigmas[-2] with
    9 fewer steps (with `steps // 4` fewer, twice, from 36), and at its sigma nearest 0.1 a jump back up to
    its sigma nearest 2, from where 9 (steps // 4) Karras steps come down again (twice from 36 steps).
    """
    steps = len(sigmas) - 1
    if steps < 20:
        return list(zip(sigmas[:-1], sigmas[1:], strict=True))
    extra, times = (steps // 4, 2) if steps >= 36 else (9, 1)
    sigmas = get_sigmas_karras(
        steps - extra * times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device
    )
    restart_at = int(torch.argmin((sigmas - 0.1).abs()))  # ties: the first, as torch.argmin
    top = int(torch.argmin((sigmas - 2).abs()))
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 == restart_at and top < restart_at:
            again = get_sigmas_karras(
                extra + 1, sigmas[restart_at].item(), sigmas[top].item(), device=sigmas.device
            )
            pairs += list(zip(again[:-2], again[1:-1], strict=True)) * times
    return pairs


def sample_restart(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Restart (Xu et al. 2023): Heun steps along `restart_steps(sigmas)`; where a step starts above the
    last one's end, fresh noise first brings x up to it (sqrt(sigma² - last²) of it)."""
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    last = None
    for i, (sigma, sigma_next) in enumerate(restart_steps(sigmas)):
        if last is not None and last < sigma:
            x = x + noise(sigma, last) * (sigma**2 - last**2) ** 0.5
        denoised = denoise(x, sigma * s_in)
        derivative = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + derivative * dt
        else:
            x_2 = x + derivative * dt
            derivative_2 = (x_2 - denoise(x_2, sigma_next * s_in)) / sigma_next
            x = x + (derivative + derivative_2) / 2 * dt
        last = sigma_next
        _report(callback, i, x, sigma, denoised)
    return x


def sample_ddim_cfgpp(
    denoise: Denoise,
    x: Tensor,
    timesteps: Tensor,
    model_sigmas: Tensor,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM CFG++ (Chung et al. 2024): DDIM (eta 0) that renoises along the unconditional noise prediction.

    x0 is the guided prediction, the direction back to the next timestep the unconditional one: read from
    `denoise.last_uncond` (set by `inference.denoisers.CFGDenoiser` on each call). A denoiser without
    guidance is its own unconditional prediction, and then this is DDIM. A1111 guides it with the CFG scale
    divided by 12.5 (`SamplerSpec.cfg_scale_multiplier`). Signature of `inference.timestep_samplers`.
    """
    alphas = 1 / (1 + model_sigmas.double().cpu() ** 2)  # alphas_cumprod
    a_prev = alphas[torch.nn.functional.pad(timesteps[:-1], (1, 0))]
    table = model_sigmas.double().cpu()
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        sigma = float(table[timesteps[index]])
        x_sigma = x * math.sqrt(1 + sigma**2)
        x0 = denoise(x_sigma, x.new_full((x.shape[0],), sigma))
        uncond = getattr(denoise, "last_uncond", None)
        eps_uncond = (x_sigma - (x0 if uncond is None else uncond)) / sigma
        a_next = float(a_prev[index])
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps_uncond
        _report(callback, i, x, sigma, x0)
    return x
