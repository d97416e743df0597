"""A1111's sampler list (v1.10.1 order) and how it resolves what users and infotexts call them.

`get_sampler_and_scheduler` turns any sampler / schedule spelling into A1111's UI names; `run_sampler` runs a
resolved sampler from per-image noise the way A1111 starts and feeds each kind of sampler.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from torch import Tensor

from inference.noise import BrownianNoise, PerImageNoise
from inference.samplers import (
    Callback,
    Denoise,
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)
from inference.schedules import AUTOMATIC, SCHEDULES, Schedule, find_schedule, get_sigmas
from inference.timestep_samplers import (
    ddim_timesteps,
    lcm_sigma_table,
    sample_ddim,
    sample_lcm,
    sample_plms,
    sample_unipc,
)


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler of A1111's list.

    kind "sigmas": `function(denoise, x, sigmas, callback, **options)`, x starting at noise * sigmas[0];
    "lcm": the same over `lcm_sigma_table`, with `LCMDenoiser` under CFG; "timesteps":
    `function(denoise, x, ddim_timesteps(steps), model_sigmas, callback)`, x starting at unit noise.
    noise "ancestral" takes a per-image `noise_sampler`, "brownian" a `BrownianNoise` (A1111: Brownian tree).
    """

    name: str  # A1111's UI and infotext name
    function: Callable[..., Tensor]
    aliases: tuple[str, ...] = ()  # A1111's aliases
    # Ours, not A1111's: k-diffusion's function names, the style `GenerationParams.sampler` uses.
    short_names: tuple[str, ...] = ()
    scheduler: str | None = None  # the schedule "Automatic" means for this sampler
    discard_penultimate_sigma: bool = False
    second_order: bool = False  # two denoiser calls a step (A1111 doubles prompt-editing steps)
    noise: Literal["none", "ancestral", "brownian"] = "none"
    kind: Literal["sigmas", "timesteps", "lcm"] = "sigmas"

    def schedule_for(self, schedule: str) -> str:
        """The schedule label to build sigmas with: "Automatic" becomes this sampler's default, if it has one."""
        found = find_schedule(schedule) or AUTOMATIC
        if found is AUTOMATIC and self.scheduler is not None:
            found = find_schedule(self.scheduler) or AUTOMATIC
        return found.label


SAMPLER_SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", sample_dpmpp_2m, ("k_dpmpp_2m",), ("dpmpp_2m",), "karras"),
    SamplerSpec(
        "DPM++ SDE",
        sample_dpmpp_sde,
        ("k_dpmpp_sde",),
        ("dpmpp_sde",),
        "karras",
        second_order=True,
        noise="brownian",
    ),
    SamplerSpec(
        "DPM++ 2M SDE",
        sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde",),
        ("dpmpp_2m_sde",),
        "exponential",
        noise="brownian",
    ),
    SamplerSpec(
        "DPM++ 2M SDE Heun",
        partial(sample_dpmpp_2m_sde, solver_type="heun"),
        ("k_dpmpp_2m_sde_heun",),
        ("dpmpp_2m_sde_heun",),
        "exponential",
        noise="brownian",
    ),
    SamplerSpec(
        "DPM++ 2S a",
        sample_dpmpp_2s_ancestral,
        ("k_dpmpp_2s_a",),
        ("dpmpp_2s_ancestral",),
        "karras",
        second_order=True,
        noise="ancestral",
    ),
    SamplerSpec(
        "Euler a",
        sample_euler_ancestral,
        ("k_euler_a", "k_euler_ancestral"),
        ("euler_ancestral",),
        noise="ancestral",
    ),
    SamplerSpec("Euler", sample_euler, ("k_euler",), ("euler",)),
    SamplerSpec("LMS", sample_lms, ("k_lms",), ("lms",)),
    SamplerSpec("Heun", sample_heun, ("k_heun",), ("heun",), second_order=True),
    SamplerSpec(
        "DPM2",
        sample_dpm_2,
        ("k_dpm_2",),
        ("dpm_2",),
        "karras",
        discard_penultimate_sigma=True,
        second_order=True,
    ),
    SamplerSpec(
        "DPM2 a",
        sample_dpm_2_ancestral,
        ("k_dpm_2_a",),
        ("dpm_2_ancestral",),
        "karras",
        discard_penultimate_sigma=True,
        second_order=True,
        noise="ancestral",
    ),
    SamplerSpec("DDIM", sample_ddim, ("ddim",), kind="timesteps"),
    SamplerSpec("PLMS", sample_plms, ("plms",), kind="timesteps"),
    SamplerSpec("UniPC", sample_unipc, ("unipc",), ("uni_pc",), kind="timesteps"),
    SamplerSpec("LCM", sample_lcm, ("k_lcm",), ("lcm",), noise="ancestral", kind="lcm"),
)
DEFAULT_SAMPLER = SAMPLER_SPECS[0]  # A1111's samplers[0]: the default and the fallback for unknown names


# kohya sd-scripts' `--sample_sampler` names that A1111 has no alias for (its k_* names are A1111's own).
KOHYA_NAMES = {"euler_a": "Euler a", "dpm_2_a": "DPM2 a", "pndm": "PLMS", "dpmsolver++": "DPM++ 2M"}
# kohya's names with no A1111 sampler behind them, and what to use instead.
KOHYA_UNMATCHED = {
    "dpmsolver": "DPM-Solver (not ++) has no A1111 sampler; dpmsolver++ (DPM++ 2M) is the closest",
    "dpmsingle": "single-step DPM-Solver++ has no A1111 sampler; dpmsolver++ (DPM++ 2M) is the closest",
}


def find_sampler(name: str | None) -> SamplerSpec | None:
    """The sampler with this UI name, alias, short name or kohya name (case-insensitive), or None."""
    if not name:
        return None
    name = KOHYA_NAMES.get(name.casefold(), name)
    for spec in SAMPLER_SPECS:
        if spec.name == name:
            return spec
    key = name.casefold()
    for spec in SAMPLER_SPECS:
        if key in {option.casefold() for option in (spec.name, *spec.aliases, *spec.short_names)}:
            return spec
    return None


def _split_schedule_suffix(name: str) -> tuple[str, Schedule | None]:
    """Split an old combined name, "DPM++ 2M Karras" → ("DPM++ 2M", Karras); the longest suffix wins."""
    best: tuple[int, str, Schedule | None] = (0, name, None)
    for schedule in SCHEDULES:
        for option in (schedule.label, schedule.name, *schedule.aliases):
            if name.casefold().endswith(" " + option.casefold()) and len(option) > best[0]:
                best = (len(option), name[: -len(option) - 1], schedule)
    return best[1], best[2]


def get_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = False
) -> tuple[str, str]:
    """(sampler name, schedule label) for what a user or an infotext wrote, resolved as A1111 does.

    Old combined names are split ("DPM++ 2M Karras" → "DPM++ 2M", "Karras"; the suffix wins over
    `scheduler_name`); names and aliases match case-insensitively ("k_euler_a" → "Euler a"). An empty or
    unknown sampler becomes DPM++ 2M, an empty or unknown schedule Automatic; unknown ones with a warning.
    `convert_automatic` (A1111 reading infotext) writes a schedule equal to the sampler's default as Automatic.
    """
    schedule = find_schedule(scheduler_name) if scheduler_name else AUTOMATIC
    if schedule is None:
        warnings.warn(f"unknown schedule type {scheduler_name!r}; using 'Automatic'", stacklevel=2)
        schedule = AUTOMATIC
    spec = find_sampler(sampler_name or DEFAULT_SAMPLER.name)
    if spec is None and sampler_name:
        base, suffix = _split_schedule_suffix(sampler_name)
        if suffix is not None:
            spec, schedule = find_sampler(base), suffix
    if spec is None:
        warnings.warn(f"unknown sampler {sampler_name!r}; using {DEFAULT_SAMPLER.name!r}", stacklevel=2)
        spec = DEFAULT_SAMPLER
    if convert_automatic and spec.scheduler == schedule.name:
        schedule = AUTOMATIC
    return spec.name, schedule.label


def get_sampler_sigmas(spec: SamplerSpec, schedule: str, steps: int, model_sigmas: Tensor) -> Tensor:
    """Sigmas (steps+1,) for a sigma-space sampler as A1111 builds them: its default for Automatic, LCM's
    table for LCM, steps+1 sigmas less the penultimate one for DPM2 and DPM2 a."""
    if spec.kind == "timesteps":
        raise ValueError(f"{spec.name} samples at timesteps (ddim_timesteps), not at sigmas")
    table = lcm_sigma_table(model_sigmas) if spec.kind == "lcm" else model_sigmas
    return get_sigmas(
        spec.schedule_for(schedule), steps, table, discard_penultimate_sigma=spec.discard_penultimate_sigma
    )


def noise_options(spec: SamplerSpec, noise: PerImageNoise) -> dict:
    """The sampler's extra noise source: per-image draws for ancestral samplers, Brownian for SDE ones."""
    if spec.noise == "ancestral":
        return {"noise_sampler": noise}
    if spec.noise == "brownian":
        return {"noise_sampler": BrownianNoise(noise)}
    return {}


def run_sampler(
    spec: SamplerSpec,
    denoise: Denoise,
    noise: PerImageNoise,
    steps: int,
    model_sigmas: Tensor,
    schedule: str = "Automatic",
    callback: Callback | None = None,
) -> Tensor:
    """Sample a batch from per-image noise as A1111 does: the starting latent is each image's first draw, the
    sampler's noise its next ones. Returns latents to decode: (B, *noise.shape). For LCM, `denoise` must
    be built over `LCMDenoiser`."""
    start = noise.randn()
    options = noise_options(spec, noise)
    if spec.kind == "timesteps":
        return spec.function(denoise, start, ddim_timesteps(steps), model_sigmas, callback, **options)
    sigmas = get_sampler_sigmas(spec, schedule, steps, model_sigmas).to(start.device)
    return spec.function(denoise, start * sigmas[0], sigmas, callback, **options)
