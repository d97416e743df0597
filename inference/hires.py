"""A1111's hires fix: txt2img at width x height, upscale, then an img2img pass at the larger size.

The target size is `scale` x the first pass ("Upscale by") or `resize_x` x `resize_y` ("Resize width/height
to"; a 0 side follows the first pass's aspect ratio; when both are given and the aspect differs, the image
is upscaled to cover the target and the latents are cropped to it, centred, as A1111 does). Latent upscalers
interpolate the latents; "Lanczos", "None" and upscaler files (`model_upscaler`, inference.model_upscale)
decode, resize the pixels and encode again (the VAE mean, see `inference.img2img.encode_images`). The second
pass draws fresh noise from each image's own seed at the new size (A1111 makes a new per-image RNG from the
same seeds), and always runs exactly `steps` sampler steps (A1111 passes the hires steps, so the fixed-steps
arithmetic applies).

Prompt editing (`[a:b:0.5]`) counts the first pass's steps in the first pass; in the second it counts the
hires steps on a timeline that continues the first pass (`hires_timeline`, as A1111's hires conds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor
from inference.controlnet import sample_controlled_latents
from inference.controlnet_passes import PassControl
from inference.embeddings import EmbeddingDatabase
from inference.img2img import encode_images, img2img_steps, sample_img2img_latents
from inference.model_upscale import ModelUpscaler
from inference.sampler_names import find_sampler, get_sampler_and_scheduler
from inference.scheduled_conds import PromptTimeline, schedule_steps
from inference.txt2img import GenerationParams, decode_latents, sample_latents
from inference.upscalers import UPSCALERS, find_upscaler, is_latent_upscaler, upscale_image, upscale_latents


@dataclass
class HiresParams:
    """A1111's "Hires. fix" settings; empty prompt, negative prompt or sampler mean the first pass's."""

    upscaler: str = "Latent"  # a latent mode ("Latent", ...), "Lanczos", "None" or model_upscaler's name
    scale: float = 2.0  # "Upscale by", used while resize_x and resize_y are both 0
    resize_x: int = 0  # "Resize width to" (pixels)
    resize_y: int = 0  # "Resize height to" (pixels)
    steps: int = 0  # "Hires steps"; 0: as many as the first pass
    denoising_strength: float = 0.7
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = ""
    model_upscaler: ModelUpscaler | None = None  # the upscaler file that `upscaler` names, if it names one

    def __post_init__(self) -> None:
        self.upscaler = find_upscaler(self.upscaler) or self.upscaler

    def validate(self) -> None:
        """Raise ValueError for settings no hires pass can run with."""
        if self.upscaler not in UPSCALERS and self.pixel_model() is None:
            raise ValueError(
                f"unknown hires upscaler {self.upscaler!r}; use one of {', '.join(UPSCALERS)} "
                "or the name of a file in upscaler_dir"
            )
        if self.resize_x < 0 or self.resize_y < 0 or self.steps < 0:
            raise ValueError("hires resize_x, resize_y and steps must be 0 or more")
        if self.resize_x == self.resize_y == 0 and self.scale <= 0:
            raise ValueError(f"hires scale must be above 0, got {self.scale}")
        if not 0 < self.denoising_strength <= 1:
            raise ValueError(f"hires denoising_strength must be in (0, 1], got {self.denoising_strength}")
        if self.sampler and find_sampler(self.sampler) is None:
            raise ValueError(f"unknown hires sampler {self.sampler!r}; use an A1111 name such as 'Euler a'")

    def pixel_model(self) -> ModelUpscaler | None:
        """The upscaler file to run when `upscaler` names it (built-in names come first, as in A1111)."""
        model = self.model_upscaler
        return (
            model
            if model is not None and self.upscaler not in UPSCALERS and model.name == self.upscaler
            else None
        )

    def sampler_for(self, params: GenerationParams) -> str:
        """The second pass's sampler name, resolved (the first pass's when none is set)."""
        return get_sampler_and_scheduler(self.sampler or params.sampler, params.scheduler)[0]


@dataclass(frozen=True)
class HiresTarget:
    """Where the first pass is upscaled to (pixels) and how many latent cells are then cropped off."""

    width: int  # A1111's hr_upscale_to_x
    height: int  # hr_upscale_to_y
    truncate_x: int = 0  # latent columns cropped, half on the left (rounded down), the rest on the right
    truncate_y: int = 0  # latent rows cropped, half at the top, the rest at the bottom


def hires_target(width: int, height: int, hires: HiresParams, scale_factor: int = 8) -> HiresTarget:
    """The upscale size and crop for a first pass of width x height, as A1111's calculate_target_resolution."""
    x, y = hires.resize_x, hires.resize_y
    if x == 0 and y == 0:
        return HiresTarget(int(width * hires.scale), int(height * hires.scale))
    if y == 0:
        return HiresTarget(x, x * height // width)
    if x == 0:
        return HiresTarget(y * width // height, y)
    # Cover the target keeping the aspect ratio, then crop the overhang.
    if width / height < x / y:
        upscale = (x, x * height // width)
    else:
        upscale = (y * width // height, y)
    return HiresTarget(*upscale, (upscale[0] - x) // scale_factor, (upscale[1] - y) // scale_factor)


def crop_latents(latents: Tensor, target: HiresTarget) -> Tensor:
    """latents: (B, C, h, w) → centred crop less target.truncate_y rows and truncate_x columns."""
    ty, tx = target.truncate_y, target.truncate_x
    h, w = latents.shape[-2:]
    return latents[..., ty // 2 : h - (ty + 1) // 2, tx // 2 : w - (tx + 1) // 2]


def upscale_first_pass(
    model: BaseModel,
    latents: Tensor,
    upscaler: str,
    target: HiresTarget,
    pixel_model: ModelUpscaler | None = None,
) -> Tensor:
    """First-pass latents (B, 4, h, w) → latents at the target size, cropped: (B, 4, H'/8, W'/8).

    `pixel_model`, when given, upscales the decoded pixels instead of the `upscaler` named.
    """
    factor = vae_scale_factor(model)
    if pixel_model is not None:
        images = [
            pixel_model.resize(image, target.width, target.height, latents.device)
            for image in decode_latents(model, latents)
        ]
        upscaled = encode_images(model, images, target.width, target.height)
    elif is_latent_upscaler(upscaler):
        upscaled = upscale_latents(latents, upscaler, target.height // factor, target.width // factor)
    else:
        images = [
            upscale_image(image, upscaler, target.width, target.height)
            for image in decode_latents(model, latents)
        ]
        upscaled = encode_images(model, images, target.width, target.height)
    return crop_latents(upscaled, target)


def second_pass_batch(
    batch: list[GenerationParams], hires: HiresParams, width: int, height: int
) -> list[GenerationParams]:
    """The hires pass's params: the target size, and the hires prompt, negative prompt and sampler if set."""
    return [
        replace(
            params,
            prompt=hires.prompt or params.prompt,
            negative_prompt=hires.negative_prompt or params.negative_prompt,
            sampler=hires.sampler or params.sampler,
            width=width,
            height=height,
        )
        for params in batch
    ]


def generate_hires_batch(
    model: BaseModel,
    batch: list[GenerationParams],
    hires: HiresParams,
    embeddings: EmbeddingDatabase | None = None,
    control: PassControl | None = None,
) -> list[Image.Image]:
    """Render a batch with the hires fix: first pass at the params' size, second at the hires target size.

    The batch must be one `generate_batch` could render; each image depends only on its own params.
    `control`: ControlNet units for each pass (inference.controlnet_passes).
    """
    if not batch:
        return []
    factor = vae_scale_factor(model)
    for params in batch:
        params.validate(factor)
    hires.validate()
    first = batch[0]
    target = hires_target(first.width, first.height, hires, factor)
    plan = img2img_steps(first.steps, hires.denoising_strength, requested_steps=hires.steps or first.steps)
    timeline = hires_timeline(first, hires)
    with torch.no_grad():
        if control is None:
            first_latents = sample_latents(model, batch, embeddings)
        else:
            first_latents = sample_controlled_latents(model, batch, control.first, embeddings)[0]
        latents = upscale_first_pass(model, first_latents, hires.upscaler, target, hires.pixel_model())
        height, width = (size * factor for size in latents.shape[-2:])
        second = second_pass_batch(batch, hires, width, height)
        latents = sample_img2img_latents(
            model, second, latents, plan, embeddings, timeline, control=control, hires_pass=True
        )
        return decode_latents(model, latents)


def hires_timeline(params: GenerationParams, hires: HiresParams) -> PromptTimeline:
    """The steps the second pass's prompt editing counts: the first pass's and the hires pass's, each
    doubled for a second-order sampler (A1111's firstpass_steps and hires total_steps)."""
    first_spec = params.resolve()[0]
    hires_spec = find_sampler(hires.sampler_for(params))
    assert hires_spec is not None  # sampler_for only returns known names
    return PromptTimeline(
        schedule_steps(params.steps, first_spec.second_order),
        schedule_steps(hires.steps or params.steps, hires_spec.second_order),
    )


def hires_size(width: int, height: int, hires: HiresParams, scale_factor: int = 8) -> tuple[int, int]:
    """The final image size (width, height) of a hires run from a first pass of width x height."""
    target = hires_target(width, height, hires, scale_factor)
    return (
        (target.width // scale_factor - target.truncate_x) * scale_factor,
        (target.height // scale_factor - target.truncate_y) * scale_factor,
    )
