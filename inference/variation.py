"""A1111's variation seeds: an image's starting noise blended towards the noise of a second seed.

With "Variation seed strength" s > 0, image i's first draw (its starting latent) is
`slerp(s, noise(seed_i), noise(subseed_i))`, where the second noise is the first draw of a fresh generator
seeded with the variation seed (same RNG source). Later draws (ancestral and SDE noise) come from the
image's own generator only, as in A1111, and a hires pass blends its own first draw the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inference.noise import PerImageNoise, RandnSource
from inference.noise_sources import seeded_generator

# Above this mean cosine the two noises are nearly parallel and A1111 blends them linearly instead.
_PARALLEL = 0.9995


def slerp(strength: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's spherical blend of two (C, H, W) noises, `strength` 0 → `low`, 1 → `high`.

    As in A1111, the vectors are taken along dim 1 (per channel and column), and the nearly-parallel
    fallback weighs them the other way round (`low * strength + high * (1 - strength)`).
    """
    low_unit = low / low.norm(dim=1, keepdim=True)
    high_unit = high / high.norm(dim=1, keepdim=True)
    cosine = (low_unit * high_unit).sum(1)
    if cosine.mean() > _PARALLEL:
        return low * strength + high * (1 - strength)
    omega = torch.acos(cosine)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - strength) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(strength * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


class VariationNoise(PerImageNoise):
    """`PerImageNoise` whose first draw blends each image's noise with its variation seed's noise."""

    def __init__(
        self,
        sources: Sequence[torch.Generator | RandnSource],
        variations: Sequence[tuple[torch.Generator | RandnSource, float] | None],
        shape: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(sources, shape, device)
        if len(variations) != len(self.sources):
            raise ValueError(f"{len(self.sources)} images but {len(variations)} variation entries")
        self._variations: list | None = list(variations)

    def randn(self) -> Tensor:
        """The next draw of every image: (B, *shape); the first one blended where a strength is set."""
        if self._variations is None:
            return super().randn()
        draws = []
        for source, variation in zip(self.sources, self._variations, strict=True):
            noise = self._draw(source).to(self.device, self.dtype)
            if variation is not None:
                sub_source, strength = variation
                noise = slerp(strength, noise, self._draw(sub_source).to(self.device, self.dtype))
            draws.append(noise)
        self._variations = None
        return torch.stack(draws)


def image_noise_with_variations(
    seeds: Sequence[int],
    subseeds: Sequence[int],
    strengths: Sequence[float],
    shape: Sequence[int],
    rng: Sequence[str],
    device: torch.device | str,
) -> PerImageNoise:
    """Per-image noise streams; images with a non-zero strength start from their blended noise."""
    sources = [seeded_generator(seed, source, device) for seed, source in zip(seeds, rng, strict=True)]
    if not any(strengths):
        return PerImageNoise(sources, shape, device)
    variations = [
        (seeded_generator(subseed, source, device), strength) if strength else None
        for subseed, strength, source in zip(subseeds, strengths, rng, strict=True)
    ]
    return VariationNoise(sources, variations, shape, device)
