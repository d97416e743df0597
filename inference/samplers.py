"""k-diffusion style sampling: sigma schedules, the eps → denoiser wrapper, CFG, and samplers.

Every sampler works on a denoiser `D(x, sigma) -> x0` in sigma space (x = x0 + sigma * noise), so samplers
and schedules are independent pure functions that can each be checked against hand-computed values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Denoise = Callable[[Tensor, Tensor], Tensor]  # (x: (B, C, H, W), sigma: (B,)) -> denoised x0, same shape
Callback = Callable[[dict[str, Any]], None]


def model_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """Noise level of each training timestep, sqrt((1 - a) / a): (T,), increasing with t."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def t_to_sigma(t: Tensor, log_sigmas: Tensor) -> Tensor:
    """Continuous timestep (any shape) → sigma, interpolating log-sigma between integer timesteps."""
    t = t.float().clamp(0, len(log_sigmas) - 1)
    low = t.floor().long()
    high = t.ceil().long()
    frac = t - low
    return ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp()


def sigma_to_t(sigma: Tensor, log_sigmas: Tensor) -> Tensor:
    """Sigma (any shape) → continuous timestep: the inverse of `t_to_sigma`, clamped to [0, T-1]."""
    log_sigma = sigma.float().log()
    low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    frac = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return low + frac


def append_zero(sigmas: Tensor) -> Tensor:
    """Add the final sigma 0 (a clean image) to a schedule."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas_normal(model_sigmas: Tensor, steps: int) -> Tensor:
    """A1111's "Uniform" / k-diffusion default: timesteps linspace(T-1, 0, steps) → sigmas, then 0; (steps+1,)."""
    log_sigmas = model_sigmas.float().log()
    t = torch.linspace(len(log_sigmas) - 1, 0, steps, device=log_sigmas.device)
    return append_zero(t_to_sigma(t, log_sigmas))


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: torch.device | str = "cpu"
) -> Tensor:
    """Karras et al. (2022) schedule: n sigmas evenly spaced in sigma^(1/rho), then 0; (n+1,)."""
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


class EpsDenoiser:
    """Wrap an eps-predicting UNet as D(x, sigma, cond) -> x0 for samplers in sigma space."""

    def __init__(self, unet: Any, alphas_cumprod: Tensor) -> None:
        self.unet = unet
        self.sigmas = model_sigmas(alphas_cumprod.float())
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        """Smallest training noise level (about 0.0292 for SD 1.x)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest training noise level (about 14.6146 for SD 1.x)."""
        return float(self.sigmas[-1])

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """x: (B, 4, h, w) noisy latents, sigma: (B,), cond: (B, L, D) → denoised latents (B, 4, h, w)."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        # The UNet was trained on unit-variance inputs x_t = sqrt(a) x0 + sqrt(1-a) eps, i.e. x / sqrt(sigma²+1).
        c_in = (sigma**2 + 1).rsqrt().reshape(-1, 1, 1, 1)
        t = sigma_to_t(sigma, log_sigmas)
        dtype = getattr(self.unet, "dtype", x.dtype)
        eps = self.unet((x * c_in).to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample
        return x - eps.to(x.dtype) * sigma.reshape(-1, 1, 1, 1)


class CFGDenoiser:
    """Classifier-free guidance: uncond + scale * (cond - uncond), both halves in one UNet call."""

    def __init__(
        self, denoiser: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, uncond: Tensor, scale: float
    ) -> None:
        if cond.shape != uncond.shape:
            raise ValueError(f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} must match to batch")
        self.denoiser = denoiser
        self.cond_in = torch.cat([uncond, cond])
        self.scale = scale

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: (B, C, H, W), sigma: (B,) → guided denoised x0 (B, C, H, W)."""
        denoised = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), self.cond_in)
        uncond, cond = denoised.chunk(2)
        return uncond + (cond - uncond) * self.scale


def sample_euler(denoise: Denoise, x: Tensor, sigmas: Tensor, callback: Callback | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma; x: (B, C, H, W)."""
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * s_in)
        derivative = (x - denoised) / sigmas[i]
        x = x + derivative * (sigmas[i + 1] - sigmas[i])
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "denoised": denoised})
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {"euler": sample_euler}
SAMPLER_LABELS: dict[str, str] = {"euler": "Euler"}  # the names A1111 writes in infotext


def get_sampler(name: str) -> Callable[..., Tensor]:
    """Look up a sampler by its short name, with a message listing the known ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(sorted(SAMPLERS))}") from None
