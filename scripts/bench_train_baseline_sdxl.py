"""The SDXL part of the textbook LoRA step in scripts/bench_train_baseline.py, as diffusers'
train_text_to_image_lora_sdxl example does it every step: both text encoders run on the caption (with
grad when their LoRA trains), their penultimate hidden states side by side (B, 77, D1 + D2), the pooled
embedding from the second encoder's projection (B, P), and `time_ids` (B, 6) = original size (h, w) + crop
top-left (top, left) + target size (h, w) of each picture, in the weight dtype.

The example's own LoRA sits on the UNet's to_q/to_k/to_v/to_out.0 only (and the text encoders' q/k/v/out
projections with --train_text_encoder); the benchmark gives the baseline kohya's set instead (every Linear
and 1x1 conv inside the UNet's transformer blocks, q/k/v/out_proj and fc1/fc2 of both text encoders: 722
UNet + 72 + 192 modules on SDXL base), the layers our `network=lora` trains, so both sides train the same
parameters, as the SD 1.5 rows do.
"""

from __future__ import annotations

import torch
from torch import nn

from inference.models.bundle import ModelBundle


def encode_prompt(encoders: list[nn.Module], ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, 77) per encoder → states (B, 77, D1 + D2) and the last encoder's pooled (B, P)."""
    states = []
    for encoder, token_ids in zip(encoders, ids, strict=True):
        out = encoder(token_ids.to(encoder.device), output_hidden_states=True, return_dict=False)
        pooled = out[0]  # the projected end-token embedding; only the last encoder's is kept
        states.append(out[-1][-2])  # the penultimate layer's hidden states
    return torch.cat(states, dim=-1), pooled.reshape(pooled.shape[0], -1)


def compute_time_ids(
    sizes: list[tuple[int, int]], crops: list[tuple[int, int]], target: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    """(B, 6): each picture's original (h, w), crop (top, left) and the target (h, w), on `like`'s device
    and dtype (the example's weight_dtype)."""
    rows = [list(size + crop + target) for size, crop in zip(sizes, crops, strict=True)]
    return torch.tensor(rows, device=like.device, dtype=like.dtype)


def sdxl_prediction(
    bundle: ModelBundle,
    noisy: torch.Tensor,
    steps: torch.Tensor,
    ids: list[torch.Tensor],
    sizes: list[tuple[int, int]],
) -> torch.Tensor:
    """The UNet's noise prediction (B, 4, h, w) for noisy latents (B, 4, h, w) at `steps` (B,), conditioned on
    both encoders and the size/crop ids. Pictures are scaled to the square target whole: crop (0, 0)."""
    states, pooled = encode_prompt([bundle.text_encoder, bundle.text_encoder_2], ids)
    target = tuple(side * bundle.vae_scale_factor for side in noisy.shape[-2:])
    time_ids = compute_time_ids(sizes, [(0, 0)] * len(sizes), target, noisy)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    return bundle.unet(noisy, steps, states, added_cond_kwargs=added).sample
