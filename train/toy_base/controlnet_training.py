"""The toy ControlNet's training: the toy UNet frozen, a ControlNet copied from its encoder learns silhouettes.

As the ControlNet paper trains it: epsilon-prediction MSE of the frozen UNet fed the ControlNet's residuals,
the ControlNet's zero convolutions starting at zero, and part of the captions emptied so the control alone
must carry the layout. Here captions also lose their shape word, so the shape's class must come from the
control too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel

from train.toy_base.denoiser_training import LatentPool


@dataclass
class ControlPool:
    """The pictures' latents and captions, their silhouettes (N, 1, 64, 64) uint8, and shape-free captions.

    `shapeless_ids` (N, S, 77): tag captions without the shape word, drawn with probability `shapeless`.
    """

    latents: LatentPool
    silhouettes: torch.Tensor
    shapeless_ids: torch.Tensor


@dataclass(frozen=True)
class CaptionMix:
    """How often a training caption loses its shape word, and how often it is empty."""

    shapeless: float = 0.4
    empty: float = 0.1


def toy_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    """A ControlNet with the UNet's encoder weights; its hint encoder maps 64 x 64 controls to 8 x 8."""
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 64))


def control_images(silhouettes: torch.Tensor) -> torch.Tensor:
    """uint8 silhouettes (B, 1, H, W) → the RGB control in [0, 1] (B, 3, H, W) that pipelines feed."""
    return (silhouettes.float() / 255.0).expand(-1, 3, -1, -1)


def _captions(pool: ControlPool, index: torch.Tensor, mix: CaptionMix, generator: torch.Generator):
    size = len(index)
    full = pool.latents.token_ids
    ids = full[index, torch.randint(0, full.shape[1], (size,), generator=generator)]
    draw = torch.rand(size, generator=generator)
    shapeless = draw < mix.shapeless
    columns = torch.randint(0, pool.shapeless_ids.shape[1], (size,), generator=generator)
    ids[shapeless] = pool.shapeless_ids[index, columns][shapeless]
    ids[draw >= 1.0 - mix.empty] = pool.latents.empty_ids
    return ids


def train_controlnet(
    controlnet: ControlNetModel,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    pool: ControlPool,
    scheduler: DDPMScheduler,
    scale: float,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    mix: CaptionMix = CaptionMix(),
) -> list[float]:
    """Train `controlnet` (UNet and text encoder frozen); returns the loss per step."""
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    params = list(controlnet.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    controlnet.train()
    losses: list[float] = []
    latents_pool = pool.latents
    bar = tqdm(range(steps), desc="ControlNet")
    for _ in bar:
        index = torch.randint(0, len(latents_pool.mean), (batch_size,), generator=generator)
        noise_free = latents_pool.mean[index] + latents_pool.std[index] * torch.randn(
            latents_pool.mean[index].shape, generator=generator
        )
        latents = noise_free * scale
        ids = _captions(pool, index, mix, generator)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.no_grad():
            context = text_encoder(ids)[0]
        down, mid = controlnet(
            noisy,
            timesteps,
            context,
            controlnet_cond=control_images(pool.silhouettes[index]),
            return_dict=False,
        )
        prediction = unet(
            noisy, timesteps, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    controlnet.eval()
    return losses
