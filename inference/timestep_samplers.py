"""A1111's timestep samplers (DDIM, PLMS, UniPC) and LCM, over the same denoiser D(x, sigma) -> x0.

DDIM, PLMS and UniPC run as A1111 runs them: on VP latents x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, starting
from unit noise (not noise * sigma_max), at `ddim_timesteps(steps)` whatever the schedule type, and they
return VP latents at their last timestep (t = 1 for DDIM and PLMS, a hair short of clean, as in A1111).
The denoiser is called on x_t / sqrt(a_t) at sigma_t = sqrt((1 - a_t) / a_t), the same UNet input.
Signature: `(denoise, x, timesteps, model_sigmas, callback=None, **options)`; `model_sigmas: (T,)` is the
model's sigma table, `callback` gets {"i", "x", "sigma", "denoised"} after each step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from inference.denoisers import EpsDenoiser
from inference.samplers import Callback, Denoise, NoiseSampler


def ddim_timesteps(steps: int, train_steps: int = 1000) -> Tensor:
    """A1111's timesteps 1, 1 + 1000//steps, ... below 1000, increasing: (n,). DDIM takes n-1 steps (20 → 19)."""
    return (torch.arange(0, train_steps, train_steps // steps) + 1).clamp(0, train_steps - 1)


def _alphas(model_sigmas: Tensor) -> Tensor:
    return 1 / (1 + model_sigmas.double().cpu() ** 2)  # alphas_cumprod, in float64


def _eps_and_x0(denoise: Denoise, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Noise and clean-image predictions for VP latents x at noise level sigma."""
    x_sigma = x * math.sqrt(1 + sigma**2)
    x0 = denoise(x_sigma, x.new_full((x.shape[0],), sigma))
    return (x_sigma - x0) / sigma, x0


def _report(callback: Callback | None, i: int, x: Tensor, sigma: float, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


def sample_ddim(
    denoise: Denoise,
    x: Tensor,
    timesteps: Tensor,
    model_sigmas: Tensor,
    callback: Callback | None = None,
    *,
    eta: float = 0.0,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DDIM from the last timestep down to the first: len(timesteps) - 1 denoiser calls; eta > 0 adds noise."""
    alphas, table = _alphas(model_sigmas), model_sigmas.double().cpu()
    a = alphas[timesteps]
    a_prev = alphas[torch.nn.functional.pad(timesteps[:-1], (1, 0))]
    noise_scale = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        sigma = float(table[timesteps[index]])
        eps, x0 = _eps_and_x0(denoise, x, sigma)
        a_next, s = float(a_prev[index]), float(noise_scale[index])
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next - s**2) * eps
        if s > 0:
            noise = (
                noise_sampler(sigma, float(table[timesteps[index - 1]]))
                if noise_sampler is not None
                else torch.randn_like(x)
            )
            x = x + s * noise
        _report(callback, i, x, sigma, x0)
    return x


def sample_plms(
    denoise: Denoise, x: Tensor, timesteps: Tensor, model_sigmas: Tensor, callback: Callback | None = None
) -> Tensor:
    """PLMS: Adams-Bashforth on eps, orders 2 to 4; the first step is a pseudo improved Euler (2 calls)."""
    alphas, table = _alphas(model_sigmas), model_sigmas.double().cpu()

    def step(x: Tensor, eps: Tensor, index: int) -> tuple[Tensor, Tensor]:
        a = float(alphas[timesteps[index]])
        a_next = float(alphas[timesteps[index - 1]]) if index > 0 else float(alphas[0])
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        return math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps, x0

    old_eps: list[Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        sigma = float(table[timesteps[index]])
        eps, _ = _eps_and_x0(denoise, x, sigma)
        if not old_eps:
            x_next, _ = step(x, eps, index)
            eps_next, _ = _eps_and_x0(denoise, x_next, float(table[timesteps[max(index - 1, 0)]]))
            eps_prime = (eps + eps_next) / 2
        elif len(old_eps) == 1:
            eps_prime = (3 * eps - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            eps_prime = (23 * eps - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            eps_prime = (55 * eps - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, x0 = step(x, eps_prime, index)
        old_eps = [*old_eps, eps][-3:]
        _report(callback, i, x, sigma, x0)
    return x


class _VPTime:
    """UniPC's discrete noise schedule: log(alpha) piecewise linear in t, t_k = (k+1)/T at timestep k."""

    def __init__(self, alphas: Tensor) -> None:
        self.log_alpha = (0.5 * alphas.log()).tolist()
        self.steps = len(self.log_alpha)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        position = t * self.steps - 1
        k = min(max(math.floor(position), 0), self.steps - 2)
        frac = position - k
        log_alpha = (1 - frac) * self.log_alpha[k] + frac * self.log_alpha[k + 1]
        return math.exp(log_alpha), math.sqrt(-math.expm1(2 * log_alpha))

    def lam(self, t: float) -> float:
        """Half log-SNR, log(alpha_t / sigma_t)."""
        alpha, sigma = self.alpha_sigma(t)
        return math.log(alpha / sigma)


def _weighted(weights: list[float], tensors: list[Tensor]) -> Tensor | float:
    return sum((w * d for w, d in zip(weights, tensors, strict=False)), 0.0)


def _unipc_update(
    x: Tensor,
    models: list[Tensor],
    times: list[float],
    t: float,
    order: int,
    vp: _VPTime,
    data: Callable[[Tensor, float], Tensor] | None,
) -> tuple[Tensor, Tensor | None]:
    """One UniPC bh1 step on x0 predictions to time t: predictor, then the corrector if `data` is given."""
    lam_prev = vp.lam(times[-1])
    h = vp.lam(t) - lam_prev
    rks = [(vp.lam(times[-(i + 1)]) - lam_prev) / h for i in range(1, order)]
    d1s = [(models[-(i + 1)] - models[-1]) / rk for i, rk in enumerate(rks, start=1)]
    rks.append(1.0)
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / hh)  # bh1: B(h) = h
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    matrix, b_vec = torch.tensor(rows, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    alpha_t, sigma_t = vp.alpha_sigma(t)
    x_base = (sigma_t / vp.alpha_sigma(times[-1])[1]) * x - alpha_t * h_phi_1 * models[-1]
    rhos_p = [0.5] if order == 2 else torch.linalg.solve(matrix[:-1, :-1], b_vec[:-1]).tolist() if d1s else []
    x_t = x_base - alpha_t * hh * _weighted(rhos_p, d1s)
    if data is None:
        return x_t, None
    model_t = data(x_t, t)
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(matrix, b_vec).tolist()
    correction = _weighted(rhos_c[:-1], d1s) + rhos_c[-1] * (model_t - models[-1])
    return x_base - alpha_t * hh * correction, model_t


def sample_unipc(
    denoise: Denoise,
    x: Tensor,
    timesteps: Tensor,
    model_sigmas: Tensor,
    callback: Callback | None = None,
    *,
    order: int = 3,
    lower_order_final: bool = True,
    t_start: float = 1.0,
) -> Tensor:
    """UniPC (bh1, data prediction, multistep), A1111's defaults: len(timesteps) steps uniform in t, t_start → 1/T.

    Makes len(timesteps) denoiser calls. The UNet's timestep comes from log-sigma interpolation where A1111
    passes (t - 1/T) * 1000; the two agree on whole timesteps and differ by a fraction of one in between.
    A1111 refuses fewer steps than the order; here the order drops to the number of steps. img2img starts
    part-way: A1111 passes t_start = timesteps[-1] / 1000 + 1 / 1000 for the timesteps left to sample.
    """
    vp = _VPTime(_alphas(model_sigmas))
    steps = len(timesteps)
    order = min(order, steps)
    times = torch.linspace(t_start, 1.0 / vp.steps, steps + 1, dtype=torch.float64).tolist()

    def data(x: Tensor, t: float) -> Tensor:
        alpha, sigma = vp.alpha_sigma(t)
        return denoise(x / alpha, x.new_full((x.shape[0],), sigma / alpha))

    models, past = [data(x, times[0])], [times[0]]
    for step in range(1, steps + 1):
        step_order = step if step < order else (min(order, steps + 1 - step) if lower_order_final else order)
        x, model_x = _unipc_update(
            x, models, past, times[step], step_order, vp, data if step < steps else None
        )
        if model_x is not None:
            models, past = [*models, model_x][-order:], [*past, times[step]][-order:]
        alpha, sigma = vp.alpha_sigma(times[step])
        _report(callback, step - 1, x, sigma / alpha, models[-1])
    return x


def lcm_sigma_table(model_sigmas: Tensor, original_steps: int = 50) -> Tensor:
    """The sigmas of LCM's original timesteps 19, 39, ..., 999 (for 1000 and 50): (original_steps,).

    LCM samples on this table as A1111 does: pass it as `model_sigmas` to `inference.schedules.get_sigmas`.
    """
    skip = len(model_sigmas) // original_steps
    index = len(model_sigmas) - 1 - skip * torch.arange(original_steps - 1, -1, -1)
    return model_sigmas[index.to(model_sigmas.device)]


class LCMDenoiser:
    """A1111's LCM model wrapper: the UNet gets the nearest original LCM timestep, then LCM's boundary scaling.

    Wraps an `EpsDenoiser`; use it, not the plain denoiser, under CFG when sampling with LCM.
    """

    def __init__(self, denoiser: EpsDenoiser, original_steps: int = 50) -> None:
        self.denoiser = denoiser
        self.skip = len(denoiser.sigmas) // original_steps
        self.sigmas = lcm_sigma_table(denoiser.sigmas, original_steps)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """x: (B, 4, h, w), sigma: (B,), cond: (B, L, D) → LCM's x0 prediction (B, 4, h, w)."""
        log_table = self.sigmas.log().to(sigma.device)
        nearest = (sigma.log()[:, None] - log_table[None, :]).abs().argmin(dim=1)
        t = (nearest * self.skip + self.skip - 1).float()
        x0 = self.denoiser.denoise_at(x, sigma, t, cond)
        scaled_t = (t * 10).reshape(-1, 1, 1, 1)  # LCM's boundary condition, sigma_data = 0.5
        c_skip = 0.25 / (scaled_t**2 + 0.25)
        c_out = scaled_t / (scaled_t**2 + 0.25).sqrt()
        return c_out * x0 + c_skip * x


def sample_lcm(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    *,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """LCM multistep sampling over sigmas: jump to the predicted x0, then renoise to the next sigma."""
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = (
                noise_sampler(sigmas[i], sigmas[i + 1]) if noise_sampler is not None else torch.randn_like(x)
            )
            x = x + sigmas[i + 1] * noise
        _report(callback, i, x, float(sigmas[i]), denoised)
    return x
