"""SDXL's part of a training step: both text encoders, the pooled embedding and each picture's size/crop
conditioning, as kohya's sdxl_train_network feeds them to the UNet.

- Text: each 77-token chunk goes through CLIP ViT-L and OpenCLIP bigG; the penultimate layer of each (no final
  norm: SDXL's conditioning, so clip_skip does not apply), side by side (B, 77·n, D1 + D2). The pooled embedding
  is the second encoder's projected end-token state of each caption's first chunk (B, P), as kohya pools it.
- Size conditioning per picture (kohya's train_util): (original h, original w, crop top, crop left, target h,
  target w): the upright picture's size before scaling, kohya's crop corner (where the picture would sit
  fitted inside its bucket, centred: `get_crop_ltrb`, from the two sizes, whatever window random_crop cuts),
  and the bucket (or R × R) size. A flipped picture's left is target width − crop right, kohya's formula.
  These six numbers are the UNet's `time_ids`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from data.buckets import Size
from inference.models.bundle import ModelBundle
from inference.text_encoding import apply_emphasis
from train.caption_tokens import CLIP_LENGTH
from train.errors import ConfigError
from train.picture_windows import PictureWindows

SIZE_KEY = "size_conditioning"  # (B, 6) in the batch of an SDXL run
IDS_2_KEY = "input_ids_2"  # (B, 77·n): the caption in the second tokenizer's ids
POOLED_KEY = "pooled_text_embeds"  # (B, P) in a batch whose text-encoder outputs are cached


def kohya_crop_box(target: Size, original: Size) -> tuple[float, float, float, float]:
    """kohya's `get_crop_ltrb`: (l, t, r, b) of the picture fitted inside `target` and centred, from the
    sizes alone ("according to the preprocessing of Stability AI"); the window actually cut does not enter."""
    target_ratio, picture_ratio = target[0] / target[1], original[0] / original[1]
    if target_ratio > picture_ratio:
        width, height = target[1] * picture_ratio, float(target[1])
    else:
        width, height = float(target[0]), target[0] / picture_ratio
    left, top = (target[0] - width) // 2, (target[1] - height) // 2
    return left, top, left + width, top + height


def size_conditioning(original: Size, target: Size, flipped: bool) -> torch.Tensor:
    """(6,) float32: original (h, w), crop (top, left), target (h, w), as kohya's dataset computes them from
    the upright picture's (w, h) `original` and its bucket's (w, h) `target`."""
    left, top, right, _ = kohya_crop_box(target, original)
    if flipped:
        left = target[0] - right  # kohya: "crop_ltrb[2] is right, so target_size[0] - crop_ltrb[2] is left"
    values = (original[1], original[0], int(top), int(left), target[1], target[0])
    return torch.tensor(values, dtype=torch.float32)


def picture_conditioning(windows: PictureWindows, path: Path, flipped: bool) -> torch.Tensor:
    """A training picture's (6,) size conditioning from its size and its bucket (else R × R)."""
    size = windows.picture_size(path)
    _, target = windows.scaling(path, size)
    return size_conditioning(size, target, flipped)


def _penultimate(encoder: nn.Module, chunks: torch.Tensor):
    out = encoder(chunks, output_hidden_states=True)
    return out, out.hidden_states[-2]


def encode_sdxl_text(
    text_encoder: nn.Module,
    text_encoder_2: nn.Module,
    input_ids: torch.Tensor,
    input_ids_2: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, 77·n) of both tokenizers → states (B, 77·n, D1 + D2) and pooled (B, P).

    `weights` (B, 77·n), from weighted captions, scale the joined states per position and restore each
    chunk's mean (A1111's "Original" emphasis, which SDXL applies to the joined states); the pooled stays.
    """
    batch, length = input_ids.shape
    _, first = _penultimate(text_encoder, input_ids.reshape(-1, CLIP_LENGTH))
    out, second = _penultimate(text_encoder_2, input_ids_2.reshape(-1, CLIP_LENGTH))
    hidden = torch.cat([first, second.to(first.dtype)], dim=-1)
    if weights is not None:
        multipliers = weights.reshape(-1, CLIP_LENGTH).to(hidden.device, hidden.dtype)
        hidden = torch.stack(
            [apply_emphasis(h, m, "Original") for h, m in zip(hidden, multipliers, strict=True)]
        )
    pooled = out.text_embeds.reshape(batch, length // CLIP_LENGTH, -1)[:, 0]
    return hidden.reshape(batch, length, hidden.shape[-1]), pooled


def sdxl_unet_conditioning(
    bundle: ModelBundle, batch: dict, device: torch.device, train_text_encoder: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The UNet's text states (B, 77·n, D1 + D2) and added_cond_kwargs (pooled `text_embeds` (B, P), `time_ids`
    (B, 6)) for one batch: the cached states and pooled embedding when the batch has them, else encoded now.
    Untrained text encoders run under no_grad."""
    if POOLED_KEY in batch:  # dataset.cache_text_encoder_outputs
        states, pooled = batch["encoder_hidden_states"].to(device), batch[POOLED_KEY].to(device)
    else:
        with torch.set_grad_enabled(train_text_encoder and torch.is_grad_enabled()):
            states, pooled = encode_sdxl_text(
                bundle.text_encoder, bundle.text_encoder_2, batch["input_ids"].to(device),
                batch[IDS_2_KEY].to(device), batch.get("token_weights"),
            )  # fmt: skip
    time_ids = batch[SIZE_KEY].to(device, states.dtype)
    return states, {"text_embeds": pooled.to(states.dtype), "time_ids": time_ids}


def check_sdxl_training(cfg, bundle: ModelBundle) -> None:
    """What an SDXL run does differently, as one clear line: clip skip (kohya's SDXL scripts ignore it with a
    warning; here it is refused, so that nobody believes it trained with another layer)."""
    if bundle.is_sdxl and cfg.model.clip_skip > 1:
        raise ConfigError(
            "model.clip_skip: SDXL's conditioning is already both encoders' penultimate layers; set "
            f"model.clip_skip=1 ({bundle.source} is SDXL)"
        )
