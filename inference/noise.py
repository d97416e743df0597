"""Per-image noise for samplers: image i's noise comes from its own generator, whatever shares its batch.

A1111 draws every random number of a batch image by image from generators seeded with each image's seed
(the starting latent first, then the ancestral noise), so an image does not change with the batch size.
`PerImageNoise` does the same; `BrownianNoise` turns it into the Brownian-path noise SDE samplers expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor


class RandnSource(Protocol):
    """Anything that draws standard normal numbers of a given shape, e.g. `inference.rng.PhiloxGenerator`."""

    def randn(self, shape: Sequence[int]) -> Tensor: ...


class PerImageNoise:
    """A noise stream per image: each `randn()` draws one `shape` from every source in turn and stacks them.

    Use it as a sampler's `noise_sampler(sigma, sigma_next)`. To follow A1111, take the starting latent from
    the first `randn()` of the same object, then hand it to the sampler.
    """

    def __init__(
        self,
        sources: Sequence[torch.Generator | RandnSource],
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not sources:
            raise ValueError("PerImageNoise needs at least one generator")
        self.sources = list(sources)
        self.shape = tuple(int(size) for size in shape)
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_seeds(
        cls, seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu"
    ) -> PerImageNoise:
        """One CPU `torch.Generator` per seed: A1111's default ("CPU") RNG source."""
        return cls([torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds], shape, device)

    def __len__(self) -> int:
        return len(self.sources)

    def _draw(self, source: torch.Generator | RandnSource) -> Tensor:
        if isinstance(source, torch.Generator):
            return torch.randn(self.shape, generator=source, device=source.device)
        return source.randn(self.shape)

    def randn(self) -> Tensor:
        """The next draw of every image: (B, *shape)."""
        draws = [self._draw(source).to(self.device, self.dtype) for source in self.sources]
        return torch.stack(draws)

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        """Noise for one sampler step (the sigmas are ignored): (B, *shape)."""
        return self.randn()


class BrownianNoise:
    """Normalized increments (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) of one Brownian path per image.

    The SDE samplers (DPM++ SDE, DPM++ 2M SDE) ask for noise this way. A1111 answers from a torchsde
    Brownian tree seeded per image, which can be queried anywhere; we build the path forward instead, one
    `randn()` per new point as sigma falls. The law is the same (DPM++ SDE's two draws per step are
    correlated as the tree's are), the numbers are not, and torchsde is not needed.
    """

    def __init__(self, noise: PerImageNoise) -> None:
        self.noise = noise
        self._path: list[tuple[float, Tensor | float]] = []  # (sigma, W(sigma)), sigma decreasing

    def _at(self, sigma: float) -> Tensor | float:
        for known, value in self._path:
            if math.isclose(known, sigma, rel_tol=1e-6, abs_tol=1e-12):
                return value
        if not self._path:
            self._path.append((sigma, 0.0))
            return 0.0
        last, value = self._path[-1]
        if sigma > last:
            raise ValueError(
                f"Brownian noise only goes forward: sigma {sigma:.6g} asked for after {last:.6g}"
            )
        value = value + math.sqrt(last - sigma) * self.noise.randn()
        self._path.append((sigma, value))
        return value

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        """Standard normal noise for the step sigma → sigma_next, shaped (B, *shape)."""
        start, end = float(sigma), float(sigma_next)
        before = self._at(start)
        increment = self._at(end) - before
        # Points above `start` are behind the sampler now and never asked for again.
        self._path = [(known, value) for known, value in self._path if known <= start * (1 + 1e-6)]
        return increment / math.sqrt(abs(start - end))
