"""Image to image, A1111 style: encode the init image, noise it to a point of the schedule, sample the rest.

Step arithmetic (A1111's setup_img2img_steps): the sampler's full schedule of `steps` is built and only its
tail is sampled, from index `steps - t_enc - 1` on, with `t_enc = int(min(strength, 0.999) * steps)`: that
is t_enc + 1 sampler steps (20 steps at 0.75 → 16). With fix_steps (A1111's "img2img_fix_steps", and
always for the hires pass) a longer schedule of `int(steps / min(strength, 0.999))` is built and
`t_enc = steps - 1`, so exactly `steps` sampler steps run.

Sigma samplers start at init + noise * sigma_sched[0]. DDIM and PLMS start at the VP latent
sqrt(a) init + sqrt(1 - a) noise for a at timestep `timesteps[t_enc]` and step down from `timesteps[t_enc - 1]`
(t_enc - 1 steps), as A1111 runs them. UniPC starts the same way, its time grid running from
timesteps[t_enc - 1] / 1000 + 1 / 1000 (A1111's t_start) over t_enc steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor
from inference.controlnet_passes import PassControl
from inference.embeddings import EmbeddingDatabase
from inference.noise import PerImageNoise
from inference.sampler_names import SamplerSpec, get_sampler_sigmas, noise_options
from inference.samplers import Callback, Denoise
from inference.scheduled_conds import PromptTimeline
from inference.timestep_samplers import ddim_timesteps
from inference.txt2img import GenerationParams, decode_latents, prepare_sampling
from inference.upscalers import lanczos

MAX_STRENGTH = 0.999  # A1111 never starts from pure noise: strength 1 is read as 0.999


@dataclass(frozen=True)
class Img2ImgSteps:
    """A1111's img2img plan: build a schedule of `steps`, skip to `start`, and sample `t_enc + 1` steps."""

    steps: int  # length of the schedule that is built
    t_enc: int  # how far down the schedule the init image is noised

    @property
    def start(self) -> int:
        """Index of the first sigma sampled (sigma samplers): sigmas[start:] is the schedule that runs."""
        return self.steps - self.t_enc - 1

    @property
    def sampler_steps(self) -> int:
        """Denoising steps of a sigma sampler (one UNet call each for first-order samplers)."""
        return self.t_enc + 1


def img2img_steps(
    steps: int, denoising_strength: float, requested_steps: int | None = None, fix_steps: bool = False
) -> Img2ImgSteps:
    """The step plan for `steps` at `denoising_strength` in [0, 1], as A1111 computes it.

    `requested_steps` (the hires pass's steps) or `fix_steps` run exactly that many steps on a longer schedule;
    otherwise the schedule has `steps` and about strength * steps of them run.
    """
    if not 0 <= denoising_strength <= 1:
        raise ValueError(f"denoising_strength must be between 0 and 1, got {denoising_strength}")
    strength = min(denoising_strength, MAX_STRENGTH)
    if fix_steps or requested_steps is not None:
        requested = requested_steps or steps
        if denoising_strength <= 0:
            raise ValueError("denoising_strength must be above 0 when the number of steps is fixed")
        return Img2ImgSteps(int(requested / strength), requested - 1)
    return Img2ImgSteps(steps, int(strength * steps))


def images_to_tensor(images: Sequence[Image.Image], width: int, height: int) -> Tensor:
    """RGB images resized to width x height (Lanczos, A1111's "Just resize") → (B, 3, H, W) in [0, 1]."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (width, height):
            image = lanczos(image, width, height)
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def encode_images(model: BaseModel, images: Sequence[Image.Image], width: int, height: int) -> Tensor:
    """Images → latents (B, 4, H/8, W/8) in the UNet's scale, each encoded alone so batching changes nothing.

    A1111 samples the VAE's latent distribution with the global torch RNG; we take its mean (mode), so the
    same image always gives the same latents.
    """
    vae = model.vae
    pixels = images_to_tensor(images, width, height).to(vae.device, vae.dtype) * 2 - 1
    latents = [vae.encode(pixels[i : i + 1]).latent_dist.mean for i in range(len(pixels))]
    return torch.cat(latents).float() * vae.config.scaling_factor


def _start_timesteps(init: Tensor, noise: Tensor, plan: Img2ImgSteps, model_sigmas: Tensor):
    """DDIM / PLMS: the VP start latent at timesteps[t_enc] and the timesteps left to sample."""
    timesteps = ddim_timesteps(plan.steps)
    sigma = float(model_sigmas[timesteps[plan.t_enc]])
    alpha = 1 / (1 + sigma**2)  # alphas_cumprod at that timestep
    start = math.sqrt(alpha) * init + math.sqrt(1 - alpha) * noise
    return start, timesteps[: plan.t_enc]


def run_img2img_sampler(
    spec: SamplerSpec,
    denoise: Denoise,
    noise: PerImageNoise,
    init_latents: Tensor,
    plan: Img2ImgSteps,
    model_sigmas: Tensor,
    schedule: str = "Automatic",
    callback: Callback | None = None,
) -> Tensor:
    """Sample from `init_latents` (B, C, h, w) noised per `plan`: each image's first draw is its noise, the
    sampler's noise its next ones (as A1111). Returns latents to decode, (B, C, h, w)."""
    first_draw = noise.randn()
    init = init_latents.to(first_draw.device, first_draw.dtype)
    options = noise_options(spec, noise)
    if spec.kind == "timesteps":
        start, timesteps = _start_timesteps(init, first_draw, plan, model_sigmas)
        if len(timesteps) == 0:  # strength below one step: the noised init image is the result, as in A1111
            return start
        if spec.name == "UniPC":
            options["t_start"] = (float(timesteps[-1]) + 1) / len(model_sigmas)
        return spec.function(denoise, start, timesteps, model_sigmas, callback, **options)
    sigmas = get_sampler_sigmas(spec, schedule, plan.steps, model_sigmas).to(init.device)
    sigma_sched = sigmas[plan.start :]
    return spec.function(denoise, init + first_draw * sigma_sched[0], sigma_sched, callback, **options)


def sample_img2img_latents(
    model: BaseModel,
    batch: list[GenerationParams],
    init_latents: Tensor,
    plan: Img2ImgSteps,
    embeddings: EmbeddingDatabase | None = None,
    timeline: PromptTimeline | None = None,
    control: PassControl | None = None,
    hires_pass: bool = False,
) -> Tensor:
    """Sample the batch (sizes from its params) from `init_latents` (B, 4, H/8, W/8) per `plan`: (B, 4, H/8, W/8).

    Prompt editing counts the params' steps unless `timeline` says otherwise (the hires pass), not the
    steps `plan` samples, as A1111 does. `control`: ControlNet units (those of the hires pass when
    `hires_pass`), their guidance windows over the t_enc + 1 steps A1111 counts for this sampling.
    """
    callback = None
    if control is not None:
        model, controlled = control.controlled(model, plan.sampler_steps, hires_pass)
        callback = controlled.on_step
    setup = prepare_sampling(model, batch, embeddings, timeline)
    if tuple(init_latents.shape) != (len(batch), *setup.noise.shape):
        raise ValueError(
            f"init latents {tuple(init_latents.shape)} do not fit a batch of {len(batch)} at "
            f"{batch[0].width}x{batch[0].height} ({(len(batch), *setup.noise.shape)})"
        )
    return run_img2img_sampler(
        setup.spec, setup.denoise, setup.noise, init_latents, plan, setup.model_sigmas, setup.schedule,
        callback,
    )  # fmt: skip


def img2img(
    model: BaseModel,
    params: GenerationParams | Sequence[GenerationParams],
    init_images: Image.Image | Sequence[Image.Image],
    denoising_strength: float = 0.75,
    *,
    fix_steps: bool = False,
    embeddings: EmbeddingDatabase | None = None,
    control: PassControl | None = None,
) -> list[Image.Image]:
    """Render one image per params from its init image (one image serves them all), A1111 img2img style.

    Init images are resized to each params' width x height; `control`: ControlNet units at that size. Same
    params and image give identical pixels, and an image does not change with what else is in the batch
    (float rounding aside).
    """
    batch = [params] if isinstance(params, GenerationParams) else list(params)
    images = [init_images] if isinstance(init_images, Image.Image) else list(init_images)
    if len(images) == 1:
        images = images * len(batch)
    if not batch or len(images) != len(batch):
        raise ValueError(f"give one init image, or one per image: got {len(images)} for {len(batch)}")
    for item in batch:
        item.validate(vae_scale_factor(model))
    first = batch[0]
    plan = img2img_steps(first.steps, denoising_strength, fix_steps=fix_steps)
    with torch.no_grad():
        init = encode_images(model, images, first.width, first.height)
        latents = sample_img2img_latents(model, batch, init, plan, embeddings, control=control)
        return decode_latents(model, latents)
