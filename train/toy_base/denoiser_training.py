"""Stage 2 of the toy build: text encoder and UNet, trained together on cached base-world latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class LatentPool:
    """VAE posteriors of the training pictures: mean and std (N, 4, 8, 8), and token ids per caption style."""

    mean: torch.Tensor
    std: torch.Tensor
    token_ids: torch.Tensor  # (N, V, 77): V caption variants per picture
    empty_ids: torch.Tensor  # (77,): the empty caption, for classifier-free guidance


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (len(texts), 77), padded and truncated as SD's pipelines do."""
    return tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_pool(
    vae, tokenizer: CLIPTokenizer, pictures: torch.Tensor, captions: list[list[str]]
) -> LatentPool:
    """Encode every picture once (latent caching) and tokenize its caption variants (same count each)."""
    means, stds = [], []
    for chunk in tqdm(pictures.split(256), desc="caching latents", leave=False):
        posterior = vae.encode(chunk).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    flat = [text for variants in captions for text in variants]
    ids = torch.cat([tokenize(tokenizer, flat[i : i + 4096]) for i in range(0, len(flat), 4096)])
    return LatentPool(
        torch.cat(means),
        torch.cat(stds),
        ids.view(len(captions), -1, ids.shape[-1]),
        tokenize(tokenizer, [""])[0],
    )


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    pool: LatentPool,
    scheduler: DDPMScheduler,
    scale: float,
    steps: int,
    batch_size: int,
    lr: float,
    caption_dropout: float,
    generator: torch.Generator,
) -> list[float]:
    """Epsilon-prediction MSE on SD's noise schedule; returns the loss per step."""
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    unet.train()
    text_encoder.train()
    losses = []
    bar = tqdm(range(steps), desc="UNet + text encoder")
    for _ in bar:
        index = torch.randint(0, len(pool.mean), (batch_size,), generator=generator)
        noise_free = pool.mean[index] + pool.std[index] * torch.randn(
            pool.mean[index].shape, generator=generator
        )
        latents = noise_free * scale
        variant = torch.randint(0, pool.token_ids.shape[1], (batch_size,), generator=generator)
        ids = pool.token_ids[index, variant]
        dropped = torch.rand(batch_size, generator=generator) < caption_dropout
        ids[dropped] = pool.empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text_encoder(ids)[0]).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    unet.eval()
    text_encoder.eval()
    return losses
