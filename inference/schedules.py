"""Sigma schedules with A1111's schedule types ("Schedule type" in the UI and the infotext).

Each schedule is a pure function returning n sigmas, decreasing, then a final 0: shape (n+1,). Those that
need the model's noise levels take its sigma table `model_sigmas: (T,)`, increasing with the timestep
(`model_sigmas(alphas_cumprod)`); the others take only `sigma_min` / `sigma_max` (the table's two ends,
unless overridden). `get_sigmas` picks one by its A1111 label, name or alias, with A1111's step arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from inference.beta_distribution import beta_cdf as beta_cdf  # re-exported: schedules' users import it here
from inference.beta_distribution import beta_ppf


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


def _sigmas_at(model_sigmas: Tensor, t: Tensor) -> Tensor:
    return append_zero(t_to_sigma(t, model_sigmas.float().log()))


def _t_range(model_sigmas: Tensor, sigma_min: float | None, sigma_max: float | None) -> tuple[float, float]:
    """Timesteps of sigma_max and sigma_min (default: the table's ends, 0 and T-1)."""
    log_sigmas = model_sigmas.float().log()
    high = model_sigmas[-1] if sigma_max is None else torch.tensor(float(sigma_max))
    low = model_sigmas[0] if sigma_min is None else torch.tensor(float(sigma_min))
    return float(sigma_to_t(high, log_sigmas)), float(sigma_to_t(low, log_sigmas))


def get_sigmas_uniform(model_sigmas: Tensor, n: int) -> Tensor:
    """Uniform (k-diffusion's default): timesteps linspace(T-1, 0, n), log-sigma interpolated; (n+1,)."""
    t = torch.linspace(len(model_sigmas) - 1, 0, n, device=model_sigmas.device)
    return _sigmas_at(model_sigmas, t)


def get_sigmas_normal(
    model_sigmas: Tensor, n: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> Tensor:
    """Normal: timesteps linspace(t(sigma_max), t(sigma_min), n); equals Uniform over the full range; (n+1,)."""
    start, end = _t_range(model_sigmas, sigma_min, sigma_max)
    return _sigmas_at(model_sigmas, torch.linspace(start, end, n, device=model_sigmas.device))


def get_sigmas_sgm_uniform(
    model_sigmas: Tensor, n: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> Tensor:
    """SGM Uniform: n+1 timesteps from t(sigma_max) to t(sigma_min), the last one dropped; (n+1,)."""
    start, end = _t_range(model_sigmas, sigma_min, sigma_max)
    return _sigmas_at(model_sigmas, torch.linspace(start, end, n + 1, device=model_sigmas.device)[:-1])


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: torch.device | str = "cpu"
) -> Tensor:
    """Karras et al. (2022) schedule: n sigmas evenly spaced in sigma^(1/rho), then 0; (n+1,)."""
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def get_sigmas_exponential(
    n: int, sigma_min: float, sigma_max: float, device: torch.device | str = "cpu"
) -> Tensor:
    """Exponential: n sigmas evenly spaced in log-sigma, then 0; (n+1,)."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def get_sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: torch.device | str = "cpu"
) -> Tensor:
    """Polyexponential: log-sigma = log(min) + ramp^rho * (log(max) - log(min)), ramp 1 → 0; (n+1,)."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return append_zero((ramp * (log_max - log_min) + log_min).exp())


def get_sigmas_simple(model_sigmas: Tensor, n: int) -> Tensor:
    """Simple: every (T/n)-th table sigma counting down from the top, truncated to whole indices; (n+1,)."""
    stride = len(model_sigmas) / n
    index = torch.tensor(
        [len(model_sigmas) - 1 - int(x * stride) for x in range(n)], device=model_sigmas.device
    )
    return append_zero(model_sigmas[index].float())


def get_sigmas_ddim(model_sigmas: Tensor, n: int) -> Tensor:
    """DDIM: table sigmas at 1, 1 + T//n, ... below T, reversed; can give more than n (30 steps → 31); then 0."""
    index = torch.arange(1, len(model_sigmas), max(len(model_sigmas) // n, 1), device=model_sigmas.device)
    return append_zero(model_sigmas[index.flip(0)].float())


def get_sigmas_beta(
    n: int,
    sigma_min: float,
    sigma_max: float,
    alpha: float = 0.6,
    beta: float = 0.6,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Beta (Lee et al. 2024): sigma_min + ppf_Beta(alpha, beta)(1 - linspace(0, 1, n)) * (max - min); (n+1,)."""
    quantiles = [beta_ppf(1 - i / (n - 1) if n > 1 else 1.0, alpha, beta) for i in range(n)]
    sigmas = torch.tensor([sigma_min + q * (sigma_max - sigma_min) for q in quantiles], dtype=torch.float32)
    return append_zero(sigmas.to(device))


# Align Your Steps (Sabour et al. 2024): NVIDIA's 10-step SD 1.5 sigmas, as A1111 lists them. A1111 has
# an SDXL list too, for SDXL models only; this engine renders SD 1.x / 2.x, which A1111 gives the SD 1.5 one.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)


def get_sigmas_align_your_steps(n: int, device: torch.device | str = "cpu", table=AYS_SD15) -> Tensor:
    """Align Your Steps: the fixed list, log-linearly interpolated to n values unless it has n, then 0; (n+1,).

    As A1111: the list's ends stand whatever the model's sigma range (14.615 is a hair above SD's 14.6146).
    """
    if n == len(table):
        sigmas = np.array(table, dtype=np.float64)
    else:  # log-sigma linear in the position along the list, both spread over [0, 1]
        log_increasing = np.log(np.array(table[::-1], dtype=np.float64))
        positions = np.linspace(0, 1, len(table))
        sigmas = np.exp(np.interp(np.linspace(0, 1, n), positions, log_increasing))[::-1]
    return append_zero(torch.tensor(sigmas.copy(), dtype=torch.float32, device=device))


def get_sigmas_kl_optimal(
    n: int, sigma_min: float, sigma_max: float, device: torch.device | str = "cpu"
) -> Tensor:
    """KL Optimal (Sabour et al. 2024): n+1 sigmas evenly spaced in arctan(sigma) from max down to min; (n+1,).

    Unlike every other schedule it ends at sigma_min, not 0 (as A1111's): the last step stops there.
    """
    atan_min = torch.arctan(torch.tensor(sigma_min, device=device))
    atan_max = torch.arctan(torch.tensor(sigma_max, device=device))
    fraction = torch.arange(n + 1, device=device) / n
    return torch.tan(fraction * atan_min + (1.0 - fraction) * atan_max)


@dataclass(frozen=True)
class Schedule:
    """One of A1111's schedule types: `name` (as in sampler options), `label` (UI and infotext), aliases."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float | None = None  # Karras and Polyexponential only


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic"),
    Schedule("uniform", "Uniform"),
    Schedule("karras", "Karras", default_rho=7.0),
    Schedule("exponential", "Exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",)),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple"),
    Schedule("normal", "Normal"),
    Schedule("ddim", "DDIM"),
    Schedule("beta", "Beta"),
)
AUTOMATIC = SCHEDULES[0]


def find_schedule(name: str | None) -> Schedule | None:
    """The schedule with this label, name or alias (case-insensitive), or None."""
    if not name:
        return None
    key = name.casefold()
    for schedule in SCHEDULES:
        if key in {option.casefold() for option in (schedule.label, schedule.name, *schedule.aliases)}:
            return schedule
    return None


_Build = Callable[[int, Tensor, float, float, float | None], Tensor]  # (n, table, min, max, rho) -> sigmas
_BUILDERS: dict[str, _Build] = {
    "automatic": lambda n, table, lo, hi, rho: get_sigmas_uniform(table, n),
    "uniform": lambda n, table, lo, hi, rho: get_sigmas_uniform(table, n),
    "karras": lambda n, table, lo, hi, rho: get_sigmas_karras(n, lo, hi, rho, table.device),
    "exponential": lambda n, table, lo, hi, rho: get_sigmas_exponential(n, lo, hi, table.device),
    "polyexponential": lambda n, table, lo, hi, rho: get_sigmas_polyexponential(n, lo, hi, rho, table.device),
    "sgm_uniform": lambda n, table, lo, hi, rho: get_sigmas_sgm_uniform(table, n, lo, hi),
    "kl_optimal": lambda n, table, lo, hi, rho: get_sigmas_kl_optimal(n, lo, hi, table.device),
    "align_your_steps": lambda n, table, lo, hi, rho: get_sigmas_align_your_steps(n, table.device),
    "simple": lambda n, table, lo, hi, rho: get_sigmas_simple(table, n),
    "normal": lambda n, table, lo, hi, rho: get_sigmas_normal(table, n, lo, hi),
    "ddim": lambda n, table, lo, hi, rho: get_sigmas_ddim(table, n),
    "beta": lambda n, table, lo, hi, rho: get_sigmas_beta(n, lo, hi, device=table.device),
}


def get_sigmas(
    schedule: str,
    steps: int,
    model_sigmas: Tensor,
    *,
    discard_penultimate_sigma: bool = False,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
) -> Tensor:
    """Sigmas for `steps` steps of a schedule type (label, name or alias), as A1111's `get_sigmas` makes them.

    "Automatic" here means Uniform: resolve it to the sampler's default first (`SamplerSpec.schedule_for`).
    With `discard_penultimate_sigma` (DPM2, DPM2 a) it builds steps+1 sigmas and drops the next-to-last one,
    so the result still has steps+1 values. Returns float32 sigmas on the table's device, ending in 0.
    """
    found = find_schedule(schedule)
    if found is None:
        known = ", ".join(s.label for s in SCHEDULES)
        raise ValueError(f"unknown schedule type {schedule!r}; available: {known}")
    n = steps + 1 if discard_penultimate_sigma else steps
    lo = float(model_sigmas[0]) if sigma_min is None else float(sigma_min)
    hi = float(model_sigmas[-1]) if sigma_max is None else float(sigma_max)
    rho = rho or found.default_rho  # as in A1111, rho 0 means the schedule's own
    sigmas = _BUILDERS[found.name](n, model_sigmas, lo, hi, rho)
    if discard_penultimate_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas
