"""Text to image: prompt encoding (with prompt editing), seeded per-image noise, A1111's samplers, VAE decoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from inference.components import BaseModel, vae_scale_factor
from inference.denoisers import CFGDenoiser, EpsDenoiser
from inference.embeddings import EmbeddingDatabase
from inference.noise import PerImageNoise
from inference.noise_sources import RNG_SOURCES, find_rng_source
from inference.prompt_chunks import COMMA_BACKTRACK, EMPHASIS_MODES
from inference.sampler_names import SamplerSpec, find_sampler, get_sampler_and_scheduler, run_sampler
from inference.scheduled_conds import PromptTimeline, schedule_steps
from inference.sdxl_text import encode_model_conds
from inference.text_encoding import TextOptions
from inference.timestep_samplers import LCMDenoiser
from inference.variation import image_noise_with_variations

MAX_SIDE = 8192  # px: A1111's 2048-px size sliders, times the hires fix's largest scale (4)


@dataclass
class GenerationParams:
    """Everything that determines one generated image (and what its infotext records).

    `sampler` takes any A1111 name, alias or short name ("Euler a", "k_euler_a", "euler_ancestral") or an old
    combined name ("DPM++ 2M Karras"); `scheduler` an A1111 schedule type. Both are resolved to A1111's UI
    names on construction; unknown ones fall back to DPM++ 2M / Automatic with a warning, as in A1111.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    clip_skip: int = 1
    sampler: str = "Euler"
    model_name: str | None = None
    rng: str = "CPU"  # "CPU" | "GPU" | "NV" (inference.noise_sources); CPU reproduces on every machine
    scheduler: str = "Automatic"
    emphasis: str = "Original"  # A1111's emphasis mode: "Original", "No norm", "Ignore" or "None"
    comma_backtrack: int = COMMA_BACKTRACK  # A1111's "comma padding backtrack" (a setting, not infotext)
    # True: the UNet runs once per image of a batch, so image i is bit for bit the image rendered alone
    # (batched matrix products round differently: up to a level or two of a pixel). False: one call.
    exact_batch: bool = False
    # A1111's variation seed: with a strength > 0 the starting noise is blended towards subseed's noise
    # (inference.variation); 0 leaves the image as it was.
    subseed: int = 0
    subseed_strength: float = 0.0

    def __post_init__(self) -> None:
        self.sampler, self.scheduler = get_sampler_and_scheduler(self.sampler, self.scheduler)
        self.rng = find_rng_source(self.rng) or self.rng

    def resolve(self) -> tuple[SamplerSpec, str]:
        """The sampler and its schedule label, "Automatic" made the sampler's default where it has one.

        DDIM, PLMS and UniPC ignore the schedule type (as in A1111); theirs is returned as chosen.
        """
        name, schedule = get_sampler_and_scheduler(self.sampler, self.scheduler)
        spec = find_sampler(name)
        assert spec is not None  # get_sampler_and_scheduler only returns known names
        return spec, spec.schedule_for(schedule)

    def text_options(self, embeddings: EmbeddingDatabase | None = None) -> TextOptions:
        """How this image's prompts become conditioning."""
        return TextOptions(self.clip_skip, self.emphasis, self.comma_backtrack, embeddings)

    def validate(self, scale_factor: int = 8) -> None:
        """Raise ValueError for values no image can be generated with."""
        if self.width % scale_factor or self.height % scale_factor or min(self.width, self.height) <= 0:
            raise ValueError(
                f"width and height must be positive multiples of {scale_factor}, got "
                f"{self.width}x{self.height}"
            )
        if max(self.width, self.height) > MAX_SIDE:  # a typo would render for hours or run out of memory
            raise ValueError(
                f"width and height must be at most {MAX_SIDE} px, got {self.width}x{self.height} (SD 1.5 "
                "renders 512, SDXL 1024; hires.scale enlarges a first pass)"
            )
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.clip_skip < 1:
            raise ValueError(f"clip_skip must be at least 1 (1 = the last layer), got {self.clip_skip}")
        for name in ("cfg_scale", "subseed_strength"):  # a NaN renders a black picture without a word
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.rng not in RNG_SOURCES:
            raise ValueError(f"unknown RNG source {self.rng!r}; use one of {', '.join(RNG_SOURCES)}")
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(
                f"unknown emphasis mode {self.emphasis!r}; use one of {', '.join(EMPHASIS_MODES)}"
            )


def initial_noise(seed: int, shape: tuple[int, ...]) -> Tensor:
    """Unit Gaussian noise from a CPU generator seeded with `seed`, identical on every machine."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))


def decode_latents(model: BaseModel, latents: Tensor) -> list[Image.Image]:
    """latents: (B, 4, H/8, W/8) in the UNet's scale → B RGB images (W x H)."""
    vae = model.vae
    scaled = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    # One image at a time, as A1111 decodes: a batched decode rounds differently, by a level here and there.
    pixels = torch.cat([vae.decode(scaled[i : i + 1]).sample for i in range(len(scaled))])
    pixels = ((pixels.float() + 1) / 2).clamp(0, 1)
    # Truncating (not rounding) to uint8 matches A1111's saved pixels.
    array = (255 * pixels.permute(0, 2, 3, 1).cpu().numpy()).astype(np.uint8)
    return [Image.fromarray(image) for image in array]


_SHARED = ("steps", "cfg_scale", "width", "height", "clip_skip", "emphasis", "comma_backtrack", "exact_batch")


def _check_batchable(batch: list[GenerationParams]) -> tuple[SamplerSpec, str]:
    """The batch's sampler and schedule, if its images can share one sampling pass; else ValueError."""
    first = batch[0].resolve()
    for params in batch[1:]:
        differ = [name for name in _SHARED if getattr(params, name) != getattr(batch[0], name)]
        if params.resolve() != first:
            differ.append("sampler and schedule")
        if differ:
            raise ValueError(f"images of one batch must share {', '.join(differ)}; render them separately")
    return first


@dataclass
class SamplingSetup:
    """A batch ready to sample: its sampler, the guided denoiser, the model's sigmas and per-image noise."""

    spec: SamplerSpec
    schedule: str  # the schedule label asked for; `run_sampler` resolves "Automatic"
    denoise: CFGDenoiser
    model_sigmas: Tensor  # (T,) the model's training sigmas, increasing
    noise: PerImageNoise  # (C, H/8, W/8) per image, drawn in image order


def prepare_sampling(
    model: BaseModel,
    batch: list[GenerationParams],
    embeddings: EmbeddingDatabase | None = None,
    timeline: PromptTimeline | None = None,
) -> SamplingSetup:
    """Encode the batch's prompts, wrap the UNet for its sampler and seed each image's noise stream.

    txt2img and img2img share it; each image's noise comes from its own seed and RNG source, so it does not
    depend on the batch. Prompt editing is counted in `timeline`'s steps: by default the batch's steps
    (doubled for second-order samplers, as A1111); the hires pass passes its own.
    """
    spec, schedule = _check_batchable(batch)
    first = batch[0]
    unet = model.unet
    timeline = timeline or PromptTimeline(schedule_steps(first.steps, spec.second_order))
    cond, uncond, conds_list = encode_model_conds(  # prompts split on AND; SDXL's two encoders
        model,
        [p.prompt for p in batch],
        [p.negative_prompt for p in batch],
        timeline,
        first.text_options(embeddings),
        (first.width, first.height),
    )
    training = model.noise_scheduler
    denoiser = EpsDenoiser(unet, training.alphas_cumprod.to(unet.device), training.config.prediction_type)
    # LCM's boundary scaling applies to each half before guidance, as A1111 wraps the model.
    inner = LCMDenoiser(denoiser) if spec.kind == "lcm" else denoiser
    cfg_scale = first.cfg_scale * spec.cfg_scale_multiplier  # DDIM CFG++ guides at 1/12.5 of it, as A1111
    guided = CFGDenoiser(
        inner, cond.to(unet.device), uncond.to(unet.device), cfg_scale, first.exact_batch, conds_list
    )
    scale = vae_scale_factor(model)
    # Latent channels: an inpainting UNet takes 9 in (latents, mask, masked picture) and gives 4 out.
    shape = (unet.config.out_channels, first.height // scale, first.width // scale)
    noise = image_noise_with_variations(
        [p.seed for p in batch], [p.subseed for p in batch], [p.subseed_strength for p in batch], shape,
        [p.rng for p in batch], unet.device,
    )  # fmt: skip
    return SamplingSetup(spec, schedule, guided, denoiser.sigmas, noise)


def sample_latents(
    model: BaseModel, batch: list[GenerationParams], embeddings: EmbeddingDatabase | None = None
) -> Tensor:
    """Run the sampler from each image's seeded noise to latents to decode: (B, 4, H/8, W/8) in fp32."""
    setup = prepare_sampling(model, batch, embeddings)
    return run_sampler(
        setup.spec, setup.denoise, setup.noise, batch[0].steps, setup.model_sigmas, setup.schedule
    )


def generate_batch(
    model: BaseModel, batch: list[GenerationParams], embeddings: EmbeddingDatabase | None = None
) -> list[Image.Image]:
    """Render several images in one sampling pass (one UNet call per denoiser call for all of them).

    They must share steps, CFG scale, size, sampler, schedule and text options; prompts, negative prompts,
    seeds and RNG sources may differ (conds are padded to the batch's longest, as A1111 pads them).
    `embeddings`: textual-inversion embeddings the prompts may name.
    """
    if not batch:
        return []
    for params in batch:
        params.validate(vae_scale_factor(model))
    with torch.no_grad():
        return decode_latents(model, sample_latents(model, batch, embeddings))


def generate(
    model: BaseModel, params: GenerationParams, embeddings: EmbeddingDatabase | None = None
) -> Image.Image:
    """Render one image for `params`; the same params on the same model give identical pixels."""
    return generate_batch(model, [params], embeddings)[0]


def txt2img(
    model: BaseModel,
    prompt: str,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int = 20,
    cfg_scale: float = 7.0,
    width: int = 512,
    height: int = 512,
    clip_skip: int = 1,
    sampler: str = "Euler",
    scheduler: str = "Automatic",
    rng: str = "CPU",
    emphasis: str = "Original",
) -> Image.Image:
    """Render one image from a prompt, A1111 txt2img style (75-token chunks, per-seed noise)."""
    params = GenerationParams(
        prompt, negative_prompt, seed, steps, cfg_scale, width, height, clip_skip, sampler,
        rng=rng, scheduler=scheduler, emphasis=emphasis,
    )  # fmt: skip
    return generate(model, params)
