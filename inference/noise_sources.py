"""A1111's RNG sources ("Random number generator source"): where each image's seeded noise is drawn.

"CPU": a CPU `torch.Generator`, the same numbers on every machine. "GPU": a `torch.Generator` on the model's
device, so the numbers depend on the device (on a CPU-only machine, or on Apple's MPS where A1111 also
falls back to the CPU, it is the same as "CPU"). "NV": `PhiloxGenerator`, CUDA's numbers computed on any
machine. A1111's default is "GPU"; ours is "CPU", which reproduces anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inference.noise import PerImageNoise
from inference.rng import PhiloxGenerator

RNG_SOURCES = ("CPU", "GPU", "NV")


def find_rng_source(name: str) -> str | None:
    """The RNG source spelled `name` (case-insensitive), as in `RNG_SOURCES`, or None."""
    return next((source for source in RNG_SOURCES if source.casefold() == str(name).casefold()), None)


def seeded_generator(seed: int, source: str, device: torch.device | str) -> torch.Generator | PhiloxGenerator:
    """One image's generator for `source`, seeded with `seed`; `device` is the model's (used by "GPU")."""
    found = find_rng_source(source)
    if found is None:
        raise ValueError(f"unknown RNG source {source!r}; use one of {', '.join(RNG_SOURCES)}")
    if found == "NV":
        return PhiloxGenerator(seed)
    device = torch.device(device)
    on = "cpu" if found == "CPU" or device.type == "mps" else device
    return torch.Generator(on).manual_seed(int(seed))


def image_noise(
    seeds: Sequence[int], shape: Sequence[int], source: str, device: torch.device | str
) -> PerImageNoise:
    """Per-image noise streams for a batch: shape (C, H, W) per image, draws returned on `device` in fp32."""
    return PerImageNoise([seeded_generator(seed, source, device) for seed in seeds], shape, device)
