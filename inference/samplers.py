"""k-diffusion style sampling: the ODE/SDE samplers A1111 offers (the denoisers: `inference.denoisers`).

Every sampler works on a denoiser `D(x, sigma) -> x0` in sigma space (x = x0 + sigma * noise) and a
schedule `sigmas: (steps+1,)` ending in 0 (`inference.schedules`), so samplers and schedules are
independent pure functions. Shared signature: `(denoise, x, sigmas, callback=None, **options)` with
`x: (B, C, H, W)` starting at sigmas[0] * noise; `callback` gets {"i", "x", "sigma", "denoised"} after
each step, x being the new latents. Ancestral and SDE samplers take `noise_sampler(sigma, sigma_next)`
returning standard normal noise shaped like x (`inference.noise`); without one they use `torch.randn_like`.
DDIM, PLMS, UniPC and LCM are in `inference.timestep_samplers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Schedule helpers live in inference.schedules; they stay importable from here.
from inference.schedules import append_zero as append_zero
from inference.schedules import get_sigmas_karras as get_sigmas_karras
from inference.schedules import get_sigmas_normal as get_sigmas_normal
from inference.schedules import t_to_sigma as t_to_sigma

Denoise = Callable[[Tensor, Tensor], Tensor]  # (x: (B, C, H, W), sigma: (B,)) -> denoised x0, same shape
Callback = Callable[[dict[str, Any]], None]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]  # (sigma, sigma_next) -> standard normal noise like x


def _report(callback: Callback | None, i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


def _noise_or_default(noise_sampler: NoiseSampler | None, x: Tensor) -> NoiseSampler:
    return noise_sampler if noise_sampler is not None else (lambda sigma, sigma_next: torch.randn_like(x))


def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor | float]:
    """Split a step sigma → sigma_next into a deterministic step to sigma_down and fresh noise of sigma_up.

    sigma_down² + sigma_up² = sigma_next²; eta = 1 is DDPM's amount of noise, eta = 0 no noise at all.
    """
    if not eta:
        return sigma_next, 0.0
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


def sample_euler(denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma; x: (B, C, H, W)."""
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        derivative = (x - denoised) / sigmas[i]
        x = x + derivative * (sigmas[i + 1] - sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_euler_ancestral(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
) -> Tensor:
    """Euler a: an Euler step down to sigma_down, then fresh noise up to sigma_next (none on the last step)."""
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_heun(denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None) -> Tensor:
    """Heun's method (Karras et al. 2022, Algorithm 2 without churn): two calls a step, Euler on the last."""
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        derivative = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + derivative * dt
        else:
            x_2 = x + derivative * dt
            derivative_2 = (x_2 - denoise(x_2, sigmas[i + 1] * s_in)) / sigmas[i + 1]
            x = x + (derivative + derivative_2) / 2 * dt
        _report(callback, i, x, sigmas[i], denoised)
    return x


def _log_midpoint(sigma: Tensor, sigma_next: Tensor) -> Tensor:
    return sigma.log().lerp(sigma_next.log(), 0.5).exp()


def sample_dpm_2(denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None) -> Tensor:
    """DPM2: the derivative at the log-midpoint sigma carries the whole step (DPM-Solver-2); Euler on the last."""
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        derivative = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + derivative * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = _log_midpoint(sigmas[i], sigmas[i + 1])
            x_2 = x + derivative * (sigma_mid - sigmas[i])
            derivative_2 = (x_2 - denoise(x_2, sigma_mid * s_in)) / sigma_mid
            x = x + derivative_2 * (sigmas[i + 1] - sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_dpm_2_ancestral(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM2 a: a DPM2 step down to sigma_down, then fresh noise up to sigma_next."""
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        derivative = (x - denoised) / sigmas[i]
        if sigma_down == 0:
            x = x + derivative * (sigma_down - sigmas[i])
        else:
            sigma_mid = _log_midpoint(sigmas[i], sigma_down)
            x_2 = x + derivative * (sigma_mid - sigmas[i])
            derivative_2 = (x_2 - denoise(x_2, sigma_mid * s_in)) / sigma_mid
            x = x + derivative_2 * (sigma_down - sigmas[i]) + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        _report(callback, i, x, sigmas[i], denoised)
    return x


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """Weight of the derivative at sigmas[i-j] in the LMS step i: its Lagrange basis integrated over the step."""
    roots = [sigmas[i - k] for k in range(order) if k != j]
    scale = math.prod(sigmas[i - j] - root for root in roots)
    basis = np.polynomial.Polynomial.fromroots(roots) if roots else np.polynomial.Polynomial([1.0])
    antiderivative = basis.integ()
    return float((antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])) / scale)


def sample_lms(
    denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None, *, order: int = 4
) -> Tensor:
    """Linear multistep: the last `order` derivatives extrapolated by Lagrange polynomials in sigma."""
    s_in = x.new_ones(x.shape[0])
    points = sigmas.double().cpu().tolist()
    derivatives: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        derivatives = [*derivatives, (x - denoised) / sigmas[i]][-order:]
        current = min(i + 1, order)
        weights = [lms_coefficient(current, points, i, j) for j in range(current)]
        x = x + sum(w * d for w, d in zip(weights, reversed(derivatives), strict=True))
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_dpmpp_2m(denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M): exponential-integrator steps on x0, corrected by the previous step's x0."""
    s_in = x.new_ones(x.shape[0])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            if old_denoised is not None:
                r = (sigmas[i - 1].log() - sigmas[i].log()) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            else:
                denoised_d = denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_dpmpp_2s_ancestral(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM++ 2S a: a DPM-Solver++(2S) step down to sigma_down (x0 taken at the log-midpoint), then noise."""
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            h = sigmas[i].log() - sigma_down.log()
            sigma_mid = _log_midpoint(sigmas[i], sigma_down)
            x_2 = (sigma_mid / sigmas[i]) * x - (-h / 2).expm1() * denoised
            x = (sigma_down / sigmas[i]) * x - (-h).expm1() * denoise(x_2, sigma_mid * s_in)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_dpmpp_sde(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    r: float = 0.5,
) -> Tensor:
    """DPM-Solver++ (stochastic): two ancestral half-steps a step, noise drawn at sigma_mid and sigma_next.

    A1111 passes a torchsde Brownian tree seeded per image; pass `inference.noise.BrownianNoise` for the same
    law of noise (not the same numbers). With a plain per-image stream the two draws of a step are
    independent instead of correlated.
    """
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            sigma_mid = (sigmas[i].log() - r * h).exp()
            down, up = ancestral_step(sigmas[i], sigma_mid, eta)
            x_2 = (down / sigmas[i]) * x - (down / sigmas[i] - 1) * denoised
            x_2 = x_2 + noise(sigmas[i], sigma_mid) * up
            denoised_2 = denoise(x_2, sigma_mid * s_in)
            down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            denoised_d = (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * denoised_2
            x = (down / sigmas[i]) * x - (down / sigmas[i] - 1) * denoised_d
            x = x + noise(sigmas[i], sigmas[i + 1]) * up
        _report(callback, i, x, sigmas[i], denoised)
    return x


def sample_dpmpp_2m_sde(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    solver_type: str = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE; solver_type "heun" is A1111's "DPM++ 2M SDE Heun". x0 at the last step."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    noise = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones(x.shape[0])
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            eta_h = eta * h
            decay = -(-h - eta_h).expm1()  # 1 - exp(-(1 + eta) h)
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + decay * denoised
            if old_denoised is not None:
                correction = (decay / (-h - eta_h) + 1) if solver_type == "heun" else 0.5 * decay
                x = x + correction * (h / h_last) * (denoised - old_denoised)
            if eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-(-2 * eta_h).expm1()).sqrt()
            h_last = h
        old_denoised = denoised
        _report(callback, i, x, sigmas[i], denoised)
    return x
