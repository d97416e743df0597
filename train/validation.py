"""The validation loss: how well the model denoises the held-out pictures, the same number every time.

kohya's recipe (train_network.py, `--validation_split`): every held-out picture is noised at four fixed
timesteps spread over the schedule (linspace(0, T, 6) without its ends: 200, 400, 600, 800 of 1000) and the
denoising error is averaged. Here the rest is fixed as well, so that two measurements of the same weights
give the same number and only the weights move it:
- each picture's latent sample and its four noises come from a private `torch.Generator` seeded by
  (validation_seed, folder, file name); the global random streams are neither read nor moved, so training
  continues (and resumes) exactly as without validation;
- the centre crop, no flip, no colour change; the caption's first line with prefix and suffix, no shuffle,
  no dropout;
- the models in eval mode (no LoRA dropout) under no_grad; plain MSE against the model's target (noise or
  v), whatever training.loss_type, so runs with different loss settings compare.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from data.buckets import bucket_resize_box
from data.captions import read_caption
from data.images import centre_window, cover_size, load_rgb, resize_window
from train.bucket_batches import bucket_chooser
from train.caption_ops import CaptionOptions, process_caption
from train.caption_tokens import CaptionTokens
from train.config import DatasetConfig, TrainingConfig
from train.latent_cache import encode_posterior, pixels_to_tensor
from train.sdxl_step import POOLED_KEY, size_conditioning
from train.step import STATES_KEY, diffusion_target, text_conditioning

NUM_TIMESTEPS = 4  # kohya's NUM_VALIDATION_TIMESTEPS


@dataclass(frozen=True)
class HeldOutPicture:
    """One held-out picture, ready to measure: its VAE posterior (4, h, w) and its fixed caption."""

    path: Path
    caption: str
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    seed: int  # of its private generator
    # the UNet's text conditioning when the text encoders' outputs are cached: encoder_hidden_states (77·n, D)
    # and, for SDXL, pooled_text_embeds (P,)
    text: dict[str, torch.Tensor] | None = None
    size_ids: torch.Tensor | None = None  # SDXL: (6,) size/crop conditioning of the centre crop


@dataclass(frozen=True)
class HeldOutCaptions:
    """How the run reads a caption: the first tokenizer's ids and weights, and SDXL's second tokenizer's ids."""

    inputs: Callable[[str], CaptionTokens]
    ids_2: Callable[[str], torch.Tensor] | None = None

    @classmethod
    def of(cls, dataset) -> HeldOutCaptions:
        sdxl = getattr(dataset, "tokenizer_2", None) is not None
        return cls(dataset.caption_inputs, dataset.caption_ids_2 if sdxl else None)


def validation_timesteps(num_train_timesteps: int) -> list[int]:
    """kohya's fixed timesteps: linspace(0, T, 6) without its ends (200, 400, 600, 800 for T = 1000)."""
    return [int(t) for t in np.linspace(0, num_train_timesteps, NUM_TIMESTEPS + 2, dtype=int)[1:-1]]


def picture_seed(seed: int, path: Path) -> int:
    """The generator seed of one picture: from the seed, its folder and its name (not its position)."""
    digest = hashlib.sha256(f"{seed}/{path.parent.name}/{path.name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def fixed_caption(caption: str, options: CaptionOptions) -> str:
    """The caption a held-out picture is measured with: the training options without their random ones."""
    steady = replace(
        options, shuffle_caption=False, caption_dropout_rate=0.0, caption_dropout_every_n_epochs=0,
        caption_tag_dropout_rate=0.0, enable_wildcard=False, templates=options.templates[:1],
    )  # fmt: skip
    return process_caption(caption, steady, 1, random.Random(0))


def held_out_pixels(path: Path, config: DatasetConfig) -> tuple[np.ndarray, torch.Tensor]:
    """uint8 (H, W, 3): the picture's centre crop at its bucket's size (enable_bucket), else R x R; and its
    (6,) SDXL size conditioning (kohya's, unflipped)."""
    image = load_rgb(path)
    if config.enable_bucket:
        target = bucket_chooser(config)(image.size)
        resized = bucket_resize_box(image.size, target).resized
    else:
        target = (config.resolution, config.resolution)
        resized = cover_size(image.size, target)
    pixels = np.array(resize_window(image, resized, centre_window(resized, target)), dtype=np.uint8)
    return pixels, size_conditioning(image.size, target, flipped=False)


def held_out_pictures(dataset, config: DatasetConfig, limit: int | None = None) -> list[tuple[Path, str]]:
    """(picture, fixed caption) of the dataset's held-out pictures, folder by folder, the first `limit`."""
    pictures = []
    extensions = list(config.caption_extensions)
    for subset in dataset.validation_subsets:
        for path in subset.images:
            text = read_caption(path, extensions) or subset.class_tokens
            pictures.append((path, fixed_caption(text, dataset.caption_options)))
    return pictures[:limit]


@torch.no_grad()
def build_held_out(
    dataset,
    bundle,
    config: DatasetConfig,
    seed: int,
    limit: int | None = None,
    encode_text_now: bool = False,
    clip_skip: int = 1,
) -> list[HeldOutPicture]:
    """Encode the held-out pictures once with the VAE where it is (and their captions with the text
    encoders when `encode_text_now`: their outputs are cached for training, so they may be gone later)."""
    made = []
    captions = HeldOutCaptions.of(dataset)
    for path, caption in tqdm(
        held_out_pictures(dataset, config, limit), desc="validation pictures", leave=False
    ):
        pixels, size_ids = held_out_pixels(path, config)
        mean, std = encode_posterior(bundle.vae, pixels_to_tensor(pixels, False)[None], bundle.latent_scale)
        text = None
        if encode_text_now:
            text = {k: v.cpu()[0] for k, v in encode_caption(bundle, captions, caption, clip_skip).items()}
        size_ids = size_ids if bundle.is_sdxl else None
        made.append(HeldOutPicture(path, caption, mean[0], std[0], picture_seed(seed, path), text, size_ids))
    return made


def encode_caption(
    bundle, captions: HeldOutCaptions, caption: str, clip_skip: int
) -> dict[str, torch.Tensor]:
    """One caption as the UNet's text conditioning, batch 1: encoder_hidden_states (1, 77·n, D) and, for
    SDXL, pooled_text_embeds (1, P), exactly as the training step encodes it."""
    inputs = captions.inputs(caption)
    device = next(bundle.text_encoder.parameters()).device
    weights = inputs.weights[None] if inputs.weights is not None else None
    ids_2 = captions.ids_2(caption)[None].to(device) if captions.ids_2 else None
    return text_conditioning(bundle, inputs.ids[None].to(device), ids_2, weights, clip_skip)


@contextmanager
def eval_mode(*models: nn.Module | None):
    """Every module of `models` in eval mode inside; each one's own mode put back afterwards."""
    modules = [m for model in models if model is not None for m in model.modules()]
    kept = [m.training for m in modules]
    for module in modules:
        module.training = False
    try:
        yield
    finally:
        for module, mode in zip(modules, kept, strict=True):
            module.training = mode


def picture_loss(
    picture: HeldOutPicture, unet: nn.Module, text: dict[str, torch.Tensor], scheduler: DDPMScheduler
) -> torch.Tensor:
    """The mean squared error of the UNet on one picture at the fixed timesteps (`text`: encode_caption's)."""
    device = unet.conv_in.weight.device
    generator = torch.Generator().manual_seed(picture.seed)
    mean, std = picture.latent_mean, picture.latent_std
    latents = mean + std * torch.randn(mean.shape, generator=generator)
    timesteps = torch.tensor(validation_timesteps(scheduler.config.num_train_timesteps))
    noise = torch.randn((len(timesteps), *mean.shape), generator=generator)
    latents = latents.expand(len(timesteps), *mean.shape).to(device)
    noise, timesteps = noise.to(device), timesteps.to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    count = len(timesteps)
    states = text[STATES_KEY].to(device)
    states = states.expand(count, *states.shape[1:])
    added = None
    if POOLED_KEY in text:  # SDXL: the pooled embedding and the picture's size/crop ids
        pooled = text[POOLED_KEY].to(device, states.dtype).expand(count, -1)
        added = {
            "text_embeds": pooled,
            "time_ids": picture.size_ids.to(device, states.dtype).expand(count, -1),
        }
    prediction = unet(noisy, timesteps, states, added_cond_kwargs=added).sample
    target = diffusion_target(scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def validation_loss(
    pictures: list[HeldOutPicture],
    bundle,
    scheduler: DDPMScheduler,
    captions: HeldOutCaptions,
    clip_skip: int = 1,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> float:
    """The mean loss of `pictures` at kohya's fixed timesteps, with fixed noise: deterministic for given
    weights. The global random streams (CPU and the UNet's device) are untouched; modes are put back."""
    device = bundle.unet.conv_in.weight.device
    devices = [device] if device.type == "cuda" else []
    losses = []
    models = (bundle.unet, bundle.text_encoder, bundle.text_encoder_2)
    with torch.random.fork_rng(devices=devices), eval_mode(*models), autocast():
        for picture in pictures:
            if picture.text is None:
                text = encode_caption(bundle, captions, picture.caption, clip_skip)
            else:
                text = {key: value[None] for key, value in picture.text.items()}
            losses.append(picture_loss(picture, bundle.unet, text, scheduler).item())
    return sum(losses) / len(losses)


def is_validation_step(t: TrainingConfig, step: int) -> bool:
    """kohya: every validate_every_n_steps optimizer steps (off when null)."""
    return bool(t.validate_every_n_steps) and step % t.validate_every_n_steps == 0


def is_validation_epoch(t: TrainingConfig, epoch: int) -> bool:
    """kohya: after every validate_every_n_epochs-th epoch; null = every epoch."""
    return epoch % (t.validate_every_n_epochs or 1) == 0


def held_out_for(dataset, bundle, cfg, text_cached: bool = False) -> list[HeldOutPicture]:
    """The run's held-out pictures (none without dataset.validation_split), seeded by validation_seed, else
    the run's seed; at most training.max_validation_steps of them."""
    d = cfg.dataset
    if not dataset.validation_subsets:
        return []
    seed = cfg.seed if d.validation_seed is None else d.validation_seed
    limit = cfg.training.max_validation_steps
    return build_held_out(dataset, bundle, d, seed, limit, text_cached, cfg.model.clip_skip)
