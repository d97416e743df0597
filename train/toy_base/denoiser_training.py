"""Stage 2 of the toy build: text encoder and UNet, trained together on cached base-world latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from data.toy.world import Scene, caption


@dataclass
class LatentPool:
    """VAE posteriors of the training pictures: mean and std (N, 4, 8, 8), and token ids per caption style."""

    mean: torch.Tensor
    std: torch.Tensor
    token_ids: torch.Tensor  # (N, 2, 77): tag caption, sentence caption
    empty_ids: torch.Tensor  # (77,): the empty caption, for classifier-free guidance


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (len(texts), 77), padded and truncated as SD's pipelines do."""
    return tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_pool(vae, tokenizer: CLIPTokenizer, pictures: torch.Tensor, scenes: list[Scene]) -> LatentPool:
    """Encode every picture once (latent caching) and tokenize both caption styles of every scene."""
    means, stds = [], []
    for chunk in tqdm(pictures.split(256), desc="caching latents", leave=False):
        posterior = vae.encode(chunk).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    tags = tokenize(tokenizer, [caption(s) for s in scenes])
    sentences = tokenize(tokenizer, [caption(s, sentence=True) for s in scenes])
    return LatentPool(
        torch.cat(means), torch.cat(stds), torch.stack([tags, sentences], 1), tokenize(tokenizer, [""])[0]
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
        style = torch.randint(0, 2, (batch_size,), generator=generator)
        ids = pool.token_ids[index, style]
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
