"""The toy SDXL's denoiser stage: both text encoders and the UNet, trained together on cached latents.

The conditioning is what the engine renders with (`inference.sdxl_text`): each encoder's penultimate
hidden states side by side, the second encoder's projected pooled output, time ids for an uncropped
64 x 64 picture; a dropped caption is all zeros (crossattn and pooled), as the engine's empty negative
prompt, so classifier-free guidance contrasts with exactly what it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inference.sdxl_text import SDXL_HIDDEN_LAYER, sdxl_time_ids
from train.toy_base.denoiser_training import LatentPool

PICTURE_SIZE = 64  # original size = target size; the toy pictures are never cropped


def second_token_ids(ids: torch.Tensor, tokenizer_2: CLIPTokenizer) -> torch.Tensor:
    """The second tokenizer's ids (..., 77) from the first's: same vocabulary, but padded after the first
    end token with `tokenizer_2`'s pad token ("!") instead of the end token."""
    eos = tokenizer_2.eos_token_id
    after_end = (ids == eos).long().cumsum(-1) > 1  # positions after the first end token
    return ids.masked_fill(after_end, tokenizer_2.pad_token_id)


def sdxl_conditioning(
    text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection, ids: torch.Tensor, ids_2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, 77) for each encoder → crossattn (B, 77, D1+D2) and pooled (B, P), as the engine."""
    first = text_encoder(ids, output_hidden_states=True).hidden_states[SDXL_HIDDEN_LAYER]
    out = text_encoder_2(ids_2, output_hidden_states=True)
    return torch.cat([first, out.hidden_states[SDXL_HIDDEN_LAYER]], dim=-1), out.text_embeds


def _batch(pool: LatentPool, scale: float, batch_size: int, dropout: float, generator: torch.Generator):
    """Random pictures of the pool: scaled latents (B, 4, 8, 8), token ids (B, 77), dropped mask (B,)."""
    index = torch.randint(0, len(pool.mean), (batch_size,), generator=generator)
    noise = torch.randn(pool.mean[index].shape, generator=generator)
    latents = (pool.mean[index] + pool.std[index] * noise) * scale
    variant = torch.randint(0, pool.token_ids.shape[1], (batch_size,), generator=generator)
    dropped = torch.rand(batch_size, generator=generator) < dropout
    return latents, pool.token_ids[index, variant], dropped


def train_sdxl_denoiser(
    unet: UNet2DConditionModel,
    encoders: tuple[CLIPTextModel, CLIPTextModelWithProjection],
    tokenizer_2: CLIPTokenizer,
    pool: LatentPool,
    scheduler: DDPMScheduler,
    scale: float,
    hyper: dict,
    generator: torch.Generator,
) -> list[float]:
    """Epsilon-prediction MSE on SD's noise schedule; `hyper` has steps, batch, lr, caption_dropout.
    Returns the loss per step."""
    params = [p for module in (unet, *encoders) for p in module.parameters()]
    lr, steps, batch = hyper["lr"], hyper["steps"], hyper["batch"]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    for module in (unet, *encoders):
        module.train()
    time_ids = sdxl_time_ids(PICTURE_SIZE, PICTURE_SIZE, rows=batch)
    losses = []
    bar = tqdm(range(steps), desc="SDXL UNet + text encoders")
    for _ in bar:
        latents, ids, dropped = _batch(pool, scale, batch, hyper["caption_dropout"], generator)
        crossattn, pooled = sdxl_conditioning(*encoders, ids, second_token_ids(ids, tokenizer_2))
        keep = (~dropped).to(crossattn.dtype)
        crossattn, pooled = crossattn * keep[:, None, None], pooled * keep[:, None]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        prediction = unet(noisy, timesteps, crossattn, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    for module in (unet, *encoders):
        module.eval()
    return losses
