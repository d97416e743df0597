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

import torch
from torch import Tensor


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


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny = 1e-300

    def guard(value: float) -> float:
        return value if abs(value) > tiny else tiny

    c, d = 1.0, 1 / guard(1 - (a + b) * x / (a + 1))
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 / guard(1 + numerator * d)
            c = guard(1 + numerator / c)
            result *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return result


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function I_x(a, b): the CDF of Beta(a, b) at x."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1 - math.exp(log_front) * _beta_continued_fraction(1 - x, b, a) / b


def beta_ppf(p: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b) (scipy's `stats.beta.ppf`): Newton steps kept inside a bisection bracket."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    low, high, x = 0.0, 1.0, 0.5
    for _ in range(200):
        error = beta_cdf(x, a, b) - p
        if error > 0:
            high = x
        else:
            low = x
        density = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))
        step = x - error / density if density > 0 else -1.0
        x_next = step if low < step < high else (low + high) / 2
        if abs(x_next - x) < 1e-15 or high - low < 1e-15:
            return x_next
        x = x_next
    return x


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
