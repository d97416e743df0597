"""Picture pools for the toy build: drawn once from a seed, held in memory as tensors."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from data.toy.world import Scene, random_broad_image, random_shading, render, sample_scene, scale_brightness


def to_tensor(images: list) -> torch.Tensor:
    """PIL pictures → float tensor (N, 3, H, W) in [-1, 1]."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def vae_pool(
    count: int, seed: int, base_fraction: float = 0.5, shaded_fraction: float = 0.15
) -> torch.Tensor:
    """Pictures for the VAE: base world, base world under shading, and anything-goes.

    The shaded base scenes teach the VAE smooth darkening of the base palette's backgrounds, which
    held-out looks (the style's vignette on a white background) need and plain scenes never show.
    """
    rng = np.random.default_rng([seed, 10])
    images = []
    for _ in tqdm(range(count), desc="drawing VAE pictures", leave=False):
        draw = rng.random()
        if draw < base_fraction:
            images.append(render(sample_scene(rng)))
        elif draw < base_fraction + shaded_fraction:
            picture = render(sample_scene(rng))
            images.append(scale_brightness(picture, random_shading(rng, picture.width)))
        else:
            images.append(random_broad_image(rng))
    return to_tensor(images)


def base_world_pool(count: int, seed: int) -> tuple[torch.Tensor, list[Scene]]:
    """Base-world pictures and their scenes, for the text encoder and UNet."""
    rng = np.random.default_rng([seed, 20])
    scenes = [sample_scene(rng) for _ in range(count)]
    images = [render(scene) for scene in tqdm(scenes, desc="drawing base-world pictures", leave=False)]
    return to_tensor(images), scenes
