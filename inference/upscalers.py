"""Hires fix upscalers, A1111's names: latent modes (interpolate the latents) and pixel ones (resize the image).

Latent modes resize latents with `torch.nn.functional.interpolate`. Bilinear with antialias only differs from
plain bilinear when shrinking (torch's antialiased kernel widens only for downscaling); bicubic with antialias
also differs when enlarging (it uses Pillow's cubic, a = -0.5, where plain bicubic uses a = -0.75).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class LatentMode:
    """One of A1111's latent upscale modes: an interpolate mode and whether it antialiases."""

    mode: str
    antialias: bool = False


LATENT_UPSCALE_MODES: dict[str, LatentMode] = {
    "Latent": LatentMode("bilinear"),
    "Latent (antialiased)": LatentMode("bilinear", antialias=True),
    "Latent (bicubic)": LatentMode("bicubic"),
    "Latent (bicubic antialiased)": LatentMode("bicubic", antialias=True),
    "Latent (nearest)": LatentMode("nearest"),
    "Latent (nearest-exact)": LatentMode("nearest-exact"),
}
PIXEL_UPSCALERS = ("None", "Lanczos")  # decode, resize with Pillow's Lanczos, encode again
UPSCALERS = (*LATENT_UPSCALE_MODES, *PIXEL_UPSCALERS)


def find_upscaler(name: str) -> str | None:
    """The upscaler spelled `name` (case-insensitive), as A1111 names it, or None."""
    return next((known for known in UPSCALERS if known.casefold() == str(name).casefold()), None)


def is_latent_upscaler(name: str) -> bool:
    """Whether `name` resizes latents (no VAE round trip) rather than pixels."""
    return name in LATENT_UPSCALE_MODES


def upscale_latents(latents: Tensor, upscaler: str, height: int, width: int) -> Tensor:
    """latents: (B, C, h, w) → (B, C, height, width) by a latent mode's interpolation (sizes in latent cells)."""
    mode = LATENT_UPSCALE_MODES.get(upscaler)
    if mode is None:
        raise ValueError(
            f"{upscaler!r} is not a latent upscale mode; use one of {', '.join(LATENT_UPSCALE_MODES)}"
        )
    resized = torch.nn.functional.interpolate(
        latents.float(), size=(height, width), mode=mode.mode, antialias=mode.antialias
    )
    return resized.to(latents.dtype)


def lanczos(image: Image.Image, width: int, height: int) -> Image.Image:
    """Pillow's Lanczos resize to width x height (A1111's "Just resize")."""
    return image.resize((width, height), resample=Image.Resampling.LANCZOS)


def upscale_image(image: Image.Image, upscaler: str, width: int, height: int) -> Image.Image:
    """Resize `image` to width x height with a pixel upscaler, as A1111's resize_image does in "Just resize".

    "None" resizes once. "Lanczos", when enlarging, first scales both sides by the larger factor (truncated to
    whole pixels), then to that size rounded down to multiples of 8, then to the target (A1111's upscaler
    steps), each resize Lanczos; the extra resizes are no-ops when the sizes already agree.
    """
    if upscaler not in PIXEL_UPSCALERS:
        raise ValueError(f"{upscaler!r} is not a pixel upscaler; use one of {', '.join(PIXEL_UPSCALERS)}")
    scale = max(width / image.width, height / image.height)
    if upscaler == "Lanczos" and scale > 1.0:
        enlarged = (int(image.width * scale), int(image.height * scale))
        if enlarged != image.size:
            image = lanczos(image, *enlarged)
        on_grid = (int(image.width // 8 * 8), int(image.height // 8 * 8))
        if on_grid != image.size:
            image = lanczos(image, *on_grid)
    return image if image.size == (width, height) else lanczos(image, width, height)
