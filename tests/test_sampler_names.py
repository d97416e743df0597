"""Sampler and schedule names resolved as A1111 v1.10.1 resolves them, old combined names included."""

from __future__ import annotations

import warnings

import pytest
import torch

from inference.sampler_names import (
    DEFAULT_SAMPLER,
    SAMPLER_SPECS,
    find_sampler,
    get_sampler_and_scheduler,
    get_sampler_sigmas,
)
from inference.schedules import get_sigmas, model_sigmas

A1111_NAMES = [spec.name for spec in SAMPLER_SPECS]


def resolve(sampler, scheduler=None, **options):
    """Resolve, failing on any warning: valid names must resolve silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return get_sampler_and_scheduler(sampler, scheduler, **options)


@pytest.mark.parametrize("name", A1111_NAMES)
def test_a1111_names_resolve_to_themselves(name):
    assert resolve(name, "Automatic") == (name, "Automatic")
    assert resolve(name, "Karras")[1] == "Karras"


@pytest.mark.parametrize(
    ("combined", "expected", "expected_infotext"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras"), ("DPM++ 2M", "Automatic")),
        ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras"), ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential"), ("DPM++ 2M SDE", "Automatic")),
        ("DPM++ SDE Karras", ("DPM++ SDE", "Karras"), ("DPM++ SDE", "Automatic")),
        ("DPM2 a Karras", ("DPM2 a", "Karras"), ("DPM2 a", "Automatic")),
        ("LMS Karras", ("LMS", "Karras"), ("LMS", "Karras")),
        ("Euler a Karras", ("Euler a", "Karras"), ("Euler a", "Karras")),
        ("DPM++ 2M SGMUniform", ("DPM++ 2M", "SGM Uniform"), ("DPM++ 2M", "SGM Uniform")),
        (
            "DPM++ 2M SDE Heun Exponential",
            ("DPM++ 2M SDE Heun", "Exponential"),
            ("DPM++ 2M SDE Heun", "Automatic"),
        ),
    ],
)
def test_old_combined_names_are_split(combined, expected, expected_infotext):
    assert resolve(combined) == expected
    assert resolve(combined, "Beta") == expected  # the name's own schedule wins, as in A1111
    assert resolve(combined, convert_automatic=True) == expected_infotext


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("k_euler_a", "Euler a"),
        ("k_euler_ancestral", "Euler a"),
        ("K_EULER_A", "Euler a"),
        ("euler_ancestral", "Euler a"),
        ("euler a", "Euler a"),
        ("euler", "Euler"),
        ("k_dpmpp_2m", "DPM++ 2M"),
        ("dpm++ 2m", "DPM++ 2M"),
        ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
        ("k_dpm_2_a", "DPM2 a"),
        ("ddim", "DDIM"),
        ("plms", "PLMS"),
        ("unipc", "UniPC"),
        ("k_lcm", "LCM"),
    ],
)
def test_aliases_are_case_insensitive(alias, name):
    assert resolve(alias, "karras") == (name, "Karras")


def test_no_name_means_the_default_silently():
    assert resolve(None, None) == (DEFAULT_SAMPLER.name, "Automatic")
    assert resolve("", "") == ("DPM++ 2M", "Automatic")


def test_unknown_sampler_falls_back_with_a_warning():
    with pytest.warns(UserWarning, match="unknown sampler 'Euler Z'.*'DPM\\+\\+ 2M'"):
        assert get_sampler_and_scheduler("Euler Z", "Karras") == ("DPM++ 2M", "Karras")
    # A known schedule suffix is still taken, as A1111 takes it.
    with pytest.warns(UserWarning, match="unknown sampler 'Euler Z Karras'"):
        assert get_sampler_and_scheduler("Euler Z Karras", None) == ("DPM++ 2M", "Karras")


def test_unknown_schedule_falls_back_with_a_warning():
    with pytest.warns(UserWarning, match="unknown schedule type 'Wobbly'.*'Automatic'"):
        assert get_sampler_and_scheduler("Euler", "Wobbly") == ("Euler", "Automatic")


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("DPM++ 2M", "Karras"),
        ("DPM++ SDE", "Karras"),
        ("DPM++ 2M SDE", "Exponential"),
        ("DPM++ 2M SDE Heun", "Exponential"),
        ("DPM++ 2S a", "Karras"),
        ("DPM2", "Karras"),
        ("DPM2 a", "Karras"),
        ("Euler a", "Automatic"),
        ("Euler", "Automatic"),
        ("LMS", "Automatic"),
        ("Heun", "Automatic"),
        ("LCM", "Automatic"),
    ],
)
def test_automatic_means_the_samplers_own_schedule(name, default):
    spec = find_sampler(name)
    assert spec.schedule_for("Automatic") == default
    assert spec.schedule_for("Simple") == "Simple"


def test_sampler_sigmas_follow_a1111_step_arithmetic():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    table = model_sigmas(torch.cumprod(1 - betas, dim=0).float())
    dpm2 = get_sampler_sigmas(find_sampler("DPM2"), "Automatic", 20, table)
    full = get_sigmas("Karras", 21, table)
    assert torch.equal(dpm2, torch.cat([full[:-2], full[-1:]]))
    assert torch.equal(
        get_sampler_sigmas(find_sampler("DPM++ 2M"), "Automatic", 20, table), get_sigmas("Karras", 20, table)
    )
    assert torch.equal(
        get_sampler_sigmas(find_sampler("Euler"), "Automatic", 20, table), get_sigmas("Uniform", 20, table)
    )
    assert get_sampler_sigmas(find_sampler("LCM"), "Automatic", 4, table)[0].item() == pytest.approx(
        table[-1].item()
    )
    with pytest.raises(ValueError, match="DDIM samples at timesteps"):
        get_sampler_sigmas(find_sampler("DDIM"), "Automatic", 20, table)


def test_names_and_aliases_are_unique():
    seen = {}
    for spec in SAMPLER_SPECS:
        for option in (spec.name, *spec.aliases, *spec.short_names):
            assert seen.setdefault(option.casefold(), spec.name) == spec.name, option
    assert A1111_NAMES[0] == "DPM++ 2M"


# (sampler_name, scheduler_name, convert_automatic) → A1111's result, traced through v1.10.1's
# modules.sd_samplers.get_sampler_and_scheduler by hand: schedules cut " label|name|alias" suffixes in list
# order, case-sensitively, each at most once and each on what the previous ones left; the rest must be a UI
# name exactly (else samplers[0], DPM++ 2M); `convert_automatic` turns the sampler's default into Automatic.
A1111_TABLE = [
    ("DPM++ 2M Karras", None, True, ("DPM++ 2M", "Automatic")),
    ("DPM++ 2M Karras", None, False, ("DPM++ 2M", "Karras")),
    ("DPM++ 2M karras", None, False, ("DPM++ 2M", "Karras")),  # the schedule's name is an option too
    ("DPM++ 2M SDE Karras", "Exponential", True, ("DPM++ 2M SDE", "Karras")),  # the suffix beats the field
    ("DPM++ 2M SDE Heun Exponential", None, True, ("DPM++ 2M SDE Heun", "Automatic")),
    ("DPM++ 3M SDE Exponential", None, True, ("DPM++ 3M SDE", "Automatic")),
    ("DPM++ 3M SDE Karras", None, True, ("DPM++ 3M SDE", "Karras")),
    ("Euler a", "Karras", True, ("Euler a", "Karras")),  # " a" is no schedule
    ("Euler a Normal", None, True, ("Euler a", "Normal")),
    ("DDIM DDIM", None, True, ("DDIM", "DDIM")),  # "DDIM" is a sampler and a schedule
    ("DDIM CFG++ Karras", None, True, ("DDIM CFG++", "Karras")),
    ("Restart Karras", None, True, ("Restart", "Automatic")),
    ("DPM++ 2M Polyexponential", None, True, ("DPM++ 2M", "Polyexponential")),  # not " Exponential"
    ("DPM++ 2M SGMUniform", None, True, ("DPM++ 2M", "SGM Uniform")),  # SGM Uniform's alias
    ("DPM++ 2M sgm_uniform", None, True, ("DPM++ 2M", "SGM Uniform")),
    ("LMS Align Your Steps", None, True, ("LMS", "Align Your Steps")),
    ("LMS kl_optimal", None, True, ("LMS", "KL Optimal")),
    # Uniform comes before SGM Uniform, Karras and Beta in the list: it cuts first, then they cut the rest.
    ("Euler SGM Uniform", None, True, ("DPM++ 2M", "Uniform")),
    ("DPM++ 2M Karras Uniform", None, False, ("DPM++ 2M", "Karras")),
    ("DPM++ 2M Uniform Karras", None, False, ("DPM++ 2M", "Karras")),  # "DPM++ 2M Uniform" is no sampler
    ("Heun Beta Uniform", None, False, ("Heun", "Beta")),
    ("Euler Karras Karras", None, False, ("DPM++ 2M", "Karras")),  # each schedule cuts once
    ("DPM++ 2M KARRAS", "Simple", False, ("DPM++ 2M", "Simple")),  # no cut: unknown → default sampler
    ("Karras", None, False, ("DPM++ 2M", "Automatic")),  # no space before the schedule: no cut
    (None, None, True, ("DPM++ 2M", "Automatic")),
    (None, "Karras", True, ("DPM++ 2M", "Automatic")),
    (None, "karras", False, ("DPM++ 2M", "Karras")),
    ("", "Exponential", True, ("DPM++ 2M", "Exponential")),
    ("DPM2 a", "karras", True, ("DPM2 a", "Automatic")),
    ("Euler", "Align Your Steps", True, ("Euler", "Align Your Steps")),
    ("UniPC", "Uniform", True, ("UniPC", "Uniform")),  # no default schedule: nothing to convert
]


@pytest.mark.parametrize(("sampler", "scheduler", "convert", "expected"), A1111_TABLE)
def test_resolves_as_a1111_get_sampler_and_scheduler(sampler, scheduler, convert, expected):
    """Cases derived from A1111 v1.10.1's `get_sampler_and_scheduler` (modules/sd_samplers.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # A1111 falls back silently; we warn (tested above)
        assert get_sampler_and_scheduler(sampler, scheduler, convert_automatic=convert) == expected


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        ("k_euler_a Karras", ("Euler a", "Karras")),  # an alias before a suffix A1111 cuts
        ("euler a karras", ("Euler a", "Karras")),
        ("dpmpp_2m_sde exponential", ("DPM++ 2M SDE", "Exponential")),
        ("euler_a", ("Euler a", "Automatic")),  # kohya's name
    ],
)
def test_our_names_only_where_a1111_falls_back(sampler, expected):
    """A1111 gives DPM++ 2M for these (no UI name is left after the cut): we read the alias instead."""
    assert resolve(sampler) == expected
