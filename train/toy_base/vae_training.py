"""Stage 1 of the toy build: the VAE, trained on a broad picture distribution."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm


def train_vae(
    vae: AutoencoderKL,
    pictures: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    kl_weight: float,
    generator: torch.Generator,
) -> list[float]:
    """MSE + L1 reconstruction + a small KL term; returns the loss per step. pictures: (N, 3, 64, 64) in [-1, 1]."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    losses = []
    bar = tqdm(range(steps), desc="VAE")
    for _ in bar:
        batch = pictures[torch.randint(0, len(pictures), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        error = reconstruction - batch
        # MSE moves colours quickly; the L1 half keeps edges sharp once colours are right.
        loss = error.pow(2).mean() + 0.5 * error.abs().mean() + kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    vae.eval()
    return losses


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, pictures: torch.Tensor) -> float:
    """1 / std of the latents, so scaled latents have unit variance (SD's 0.18215 was found the same way)."""
    means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pictures.split(256)])
    return float(1.0 / means.std())
