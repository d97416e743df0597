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

from data.errors import LoraSmithWarning
from inference.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
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
from inference.samplers_extra import sample_ddim_cfgpp, sample_dpmpp_3m_sde, sample_restart
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
    # DPM fast / adaptive: A1111's txt2img runs them over the model's sigma range, not the schedule's.
    model_range: bool = False
    cfg_scale_multiplier: float = 1.0  # DDIM CFG++: A1111 guides with the CFG scale / 12.5

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
        "DPM++ 3M SDE",
        sample_dpmpp_3m_sde,
        ("k_dpmpp_3m_sde",),
        ("dpmpp_3m_sde",),
        "exponential",
        discard_penultimate_sigma=True,
        noise="brownian",
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
    SamplerSpec(
        "DPM fast", sample_dpm_fast, ("k_dpm_fast",), ("dpm_fast",), noise="ancestral", model_range=True
    ),
    SamplerSpec(
        "DPM adaptive",
        sample_dpm_adaptive,
        ("k_dpm_ad",),
        ("dpm_adaptive",),
        noise="ancestral",
        model_range=True,
    ),
    SamplerSpec("Restart", sample_restart, ("restart",), (), "karras", second_order=True, noise="ancestral"),
    SamplerSpec("DDIM", sample_ddim, ("ddim",), kind="timesteps"),
    SamplerSpec(
        "DDIM CFG++", sample_ddim_cfgpp, ("ddim_cfgpp",), kind="timesteps", cfg_scale_multiplier=1 / 12.5
    ),
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


def strip_schedule_suffixes(name: str) -> tuple[str, Schedule | None]:
    """Cut old combined names apart as A1111's `get_sampler_and_scheduler` does: "DPM++ 2M Karras" → "DPM++ 2M".

    Every schedule in list order cuts " " + its label, name or first matching alias off the end (case-
    sensitive), and the next schedules look at what is left, so the last cut wins: "X Karras Uniform" is
    cut to "X" with Karras (Uniform comes first), "Euler SGM Uniform" to "Euler SGM" with Uniform.
    Returns what is left and the schedule of the last cut (None if nothing was cut).
    """
    found = None
    for schedule in SCHEDULES:
        for option in (schedule.label, schedule.name, *schedule.aliases):
            if name.endswith(" " + option):
                found, name = schedule, name[: -len(option) - 1]
                break
    return name, found


def _lookup_schedule(scheduler_name: str | None) -> Schedule:
    """A1111 looks the schedule up by exact name or label, else Automatic; we also take any case and aliases."""
    if not scheduler_name:
        return AUTOMATIC
    exact = {option: s for s in SCHEDULES for option in (s.name, s.label)}
    found = exact.get(scheduler_name) or find_schedule(scheduler_name)
    if found is None:
        warnings.warn(
            f"unknown schedule type {scheduler_name!r}; using 'Automatic'", LoraSmithWarning, stacklevel=3
        )
        return AUTOMATIC
    return found


def get_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = False
) -> tuple[str, str]:
    """(sampler name, schedule label) for what a user or an infotext wrote, as A1111's function resolves it.

    The steps of A1111 v1.10.1's `modules.sd_samplers.get_sampler_and_scheduler`: the schedule is looked up
    by name or label; schedule suffixes are cut off the sampler name (`strip_schedule_suffixes`) and the
    last one cut replaces it; what is left must be a sampler's UI name exactly, else the default sampler
    (DPM++ 2M) is used; with `convert_automatic` a schedule equal to the sampler's default becomes
    Automatic. A1111 pastes infotexts with `convert_automatic` (its default); its processing resolves
    without it (`fix_p_invalid_sampler_and_scheduler`), as our default does.

    Ours on top, only where A1111 would fall back to a default: a sampler left over that is no UI name is
    looked up by alias, k-diffusion or kohya name in any case ("k_euler_a", "euler a" → "Euler a"), and a
    schedule in any case or by alias ("SGMUniform"); what is still unknown falls back as in A1111, with a
    warning.
    """
    schedule = _lookup_schedule(scheduler_name)
    name, suffix = strip_schedule_suffixes(sampler_name or DEFAULT_SAMPLER.name)
    if suffix is not None:
        schedule = suffix
    spec = next((s for s in SAMPLER_SPECS if s.name == name), None) or find_sampler(name)
    if spec is None:
        warnings.warn(
            f"unknown sampler {sampler_name!r}; using {DEFAULT_SAMPLER.name!r}",
            LoraSmithWarning,
            stacklevel=2,
        )
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
    if spec.model_range:
        options["sigma_range"] = (float(model_sigmas[0]), float(model_sigmas[-1]))
    return spec.function(denoise, start * sigmas[0], sigmas, callback, **options)
