"""A1111's "DPM fast" and "DPM adaptive": DPM-Solver (Lu et al. 2022) of orders 1 to 3, as k-diffusion runs it.

DPM-Solver works in time t = -log(sigma) on the noise prediction eps = (x - D(x, sigma)) / sigma. "DPM fast"
takes fixed steps, evenly spaced in t, of orders 3, ..., 3, then 2 and 1 (or one of order steps % 3) so that
it makes exactly `steps` denoiser calls. "DPM adaptive" pairs orders 2 and 3 on each step, keeps the step if
they agree within its tolerance and sizes the next step from their difference; it makes as many calls as the
image needs (the step count is ignored). Both start at sigma_max and stop at sigma_min > 0, not at 0.

A1111 runs them from the model's sigma range whatever the schedule type in txt2img (`sigma_range`), and from
the schedule's first to its last nonzero sigma in img2img (the default: sigmas[0] and sigmas[-2]). It passes
eta = 1 (its "Eta for ancestral samplers"), so both add fresh noise after each step as ancestral samplers do.
Signature as in `inference.samplers`: `(denoise, x, sigmas, callback=None, **options)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inference.samplers import Callback, Denoise, NoiseSampler, ancestral_step


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _eps(denoise: Denoise, x: Tensor, t: Tensor) -> Tensor:
    """The noise prediction at time t: (x - D(x, sigma(t))) / sigma(t), shaped like x."""
    sigma = _sigma(t)
    return (x - denoise(x, sigma * x.new_ones(x.shape[0]))) / sigma


def dpm_solver_step(
    denoise: Denoise,
    x: Tensor,
    t: Tensor,
    t_next: Tensor,
    eps: Tensor,
    order: int,
    r1: float | None = None,
    eps_r1: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """One DPM-Solver-1, -2 or -3 step from t to t_next, given eps at (x, t): order - 1 more denoiser calls.

    Intermediate times are t + r1 h (r1: 1/2 for order 2, 1/3 for order 3) and, for order 3, t + 2/3 h.
    Returns x at t_next and eps at the first intermediate point, which a step of the same interval with the
    same r1 can take as `eps_r1` instead of calling the denoiser again (DPM adaptive's pair of orders).
    """
    h = t_next - t
    x_next = x - _sigma(t_next) * h.expm1() * eps
    if order == 1:
        return x_next, None
    r1 = r1 or (1 / 2 if order == 2 else 1 / 3)
    s1 = t + r1 * h
    if eps_r1 is None:
        eps_r1 = _eps(denoise, x - _sigma(s1) * (r1 * h).expm1() * eps, s1)
    if order == 2:
        return x_next - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps), eps_r1
    r2 = 2 / 3
    s2 = t + r2 * h
    u2 = (
        x
        - _sigma(s2) * (r2 * h).expm1() * eps
        - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
    )
    eps_r2 = _eps(denoise, u2, s2)
    return x_next - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps), eps_r1


def _ancestral_target(t: Tensor, t_next: Tensor, t_end: Tensor, eta: float) -> tuple[Tensor, Tensor | float]:
    """Where the deterministic part of a step ends (t_next further down if eta > 0) and the noise to add."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_down = torch.minimum(t_end, sigma_down.log().neg())
    return t_down, (_sigma(t_next) ** 2 - _sigma(t_down) ** 2) ** 0.5


def _time_range(sigmas: Tensor, sigma_range: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    """DPM-Solver's start and end times, -log(sigma_max) and -log(sigma_min) (float32, as k-diffusion)."""
    sigma_min, sigma_max = sigma_range if sigma_range is not None else (sigmas[-2], sigmas[0])
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("DPM fast and DPM adaptive need sigma_min and sigma_max above 0")
    ends = torch.stack([torch.as_tensor(sigma, dtype=torch.float32) for sigma in (sigma_max, sigma_min)])
    t_start, t_end = ends.to(sigmas.device).log().neg()
    return t_start, t_end


def sample_dpm_fast(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    sigma_range: tuple[float, float] | None = None,
) -> Tensor:
    """DPM fast: len(sigmas) - 1 denoiser calls in steps evenly spaced in log-sigma, orders 3, ..., 2, 1.

    Only the ends of `sigmas` count: sigmas[0] down to sigmas[-2] (or `sigma_range` = (min, max)).
    """
    calls = len(sigmas) - 1
    t_start, t_end = _time_range(sigmas, sigma_range)
    steps = calls // 3 + 1
    times = torch.linspace(float(t_start), float(t_end), steps + 1, device=x.device)
    orders = [3] * (steps - 2) + [2, 1] if calls % 3 == 0 else [3] * (steps - 1) + [calls % 3]
    noise = noise_sampler if noise_sampler is not None else (lambda sigma, sigma_next: torch.randn_like(x))
    for i, order in enumerate(orders):
        t, t_next = times[i], times[i + 1]
        t_down, sigma_up = _ancestral_target(t, t_next, t_end, eta)
        eps = _eps(denoise, x, t)
        denoised = x - _sigma(t) * eps
        x, _ = dpm_solver_step(denoise, x, t, t_down, eps, order)
        x = x + sigma_up * noise(_sigma(t), _sigma(t_next))
        if callback is not None:
            callback({"i": i, "x": x, "sigma": _sigma(t), "denoised": denoised})
    return x


def sample_dpm_adaptive(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    sigma_range: tuple[float, float] | None = None,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    accept_safety: float = 0.81,
) -> Tensor:
    """DPM adaptive (DPM-Solver-23): steps of orders 2 and 3 together, sized by their difference.

    The error is one norm over the whole batch, so step sizes, and with them each image, depend on the batch
    (as in A1111). k-diffusion's step controller with its default coefficients (integral only): the next
    step is h * (1 + atan(f - 1)), f = (1 / error)^(1 / order) with order 3, or 1.5 with noise; a step is
    kept when f >= accept_safety. Only the ends of `sigmas` count, as for `sample_dpm_fast`.
    """
    t, t_end = _time_range(sigmas, sigma_range)
    noise = noise_sampler if noise_sampler is not None else (lambda sigma, sigma_next: torch.randn_like(x))
    controller_order = 1.5 if eta else 3
    h, x_prev, step = abs(h_init), x, 0
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    while t < t_end - 1e-5:
        t_next = torch.minimum(t_end, t + h)
        t_down, sigma_up = _ancestral_target(t, t_next, t_end, eta)
        eps = _eps(denoise, x, t)
        denoised = x - _sigma(t) * eps
        x_low, eps_r1 = dpm_solver_step(denoise, x, t, t_down, eps, 2, r1=1 / 3)
        x_high, _ = dpm_solver_step(denoise, x, t, t_down, eps, 3, eps_r1=eps_r1)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        factor = 1 + math.atan((1 / (float(error) + 1e-8)) ** (1 / controller_order) - 1)
        h *= factor
        if factor >= accept_safety:
            x_prev, x = x_low, x_high + sigma_up * noise(_sigma(t), _sigma(t_next))
            t = t_next
        if callback is not None:
            callback({"i": step, "x": x, "sigma": _sigma(t), "denoised": denoised})
        step += 1
    return x
