"""The base model made ready for a run: frozen weights in the run's dtype, on the device, caches built.

Order matters: LoRA weights are created in fp32 on the CPU (same initial values on every device), then only
the frozen weights are cast to the half-precision `weight_dtype`; the VAE and an untrained text encoder do
their caching work first and leave the device when nothing needs them any more.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from pathlib import Path

import torch
from torch import nn

from inference.models.bundle import ModelBundle
from train.config import TrainConfig
from train.latent_cache import DiskStore, build_latent_cache, default_cache_dir, weights_digest
from train.network.lora_file import model_family
from train.precision import Precision
from train.text_cache import build_text_cache

log = logging.getLogger(__name__)


def warn_clip_skip_on_sd2(facts: dict, clip_skip: int) -> None:
    """SD 2's text output is already its penultimate layer; A1111 ignores clip skip for SD 2 (kohya warns)."""
    if clip_skip > 1 and model_family(facts)[0]:
        log.warning(
            "model.clip_skip=%d on an SD 2.x base reads %d layer(s) before SD 2's own penultimate one; "
            "A1111 ignores clip skip for SD 2 and renders the LoRA at SD 2's layer: use clip_skip=1.",
            clip_skip,
            clip_skip - 1,
        )


def hold_frozen_in(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the frozen (requires_grad=False) float parameters and float buffers of `module` to `dtype`."""
    for param in module.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    for owner in module.modules():
        for name, buffer in owner.named_buffers(recurse=False):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                setattr(owner, name, buffer.to(dtype))


def hold_trained_in(params: list[nn.Parameter], dtype: torch.dtype) -> None:
    """full_fp16 / full_bf16: the trained weights in half precision as well."""
    for param in params:
        if param.dtype != dtype:
            param.data = param.data.to(dtype)


def release_memory() -> None:
    """Give freed memory back to the system (glibc keeps freed heap pages otherwise)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def drop_vae_decoder(bundle: ModelBundle) -> None:
    """Free the VAE's decoder (about 60 % of its weights) when only its encoder is used from here on."""
    bundle.vae.decoder = None
    bundle.vae.post_quant_conv = None
    release_memory()


def cache_latents(
    dataset, bundle: ModelBundle, cfg: TrainConfig, precision: Precision, device, decoder_needed: bool = True
) -> int:
    """Encode every picture once and attach the cache to the dataset; returns entries read from disk.

    Without `decoder_needed` (no render during or after training) the decoder leaves memory before the
    encoding starts, which lowers the run's peak: until the VAE leaves, it sits beside the UNet."""
    d = cfg.dataset
    hold_frozen_in(bundle.vae, precision.weight_dtype)
    bundle.vae.to(device)
    store = None
    if d.cache_latents_to_disk:
        folder = Path(d.latent_cache_dir).expanduser() if d.latent_cache_dir else default_cache_dir()
        store = DiskStore(folder, f"{weights_digest(bundle.vae)}|{precision.weight_dtype}")  # the whole VAE
    if not decoder_needed:
        drop_vae_decoder(bundle)
    cache, reused = build_latent_cache(
        dataset, bundle.vae, bundle.latent_scale, d.flip_aug, d.vae_batch_size, store
    )
    dataset.attach_latent_cache(cache.lookup)
    return reused


def cache_text_outputs(dataset, bundle: ModelBundle, cfg: TrainConfig, precision: Precision, device) -> None:
    """Encode every caption once with the (untrained) text encoders and attach the cache to the dataset."""
    encoders = [m for m in (bundle.text_encoder, bundle.text_encoder_2) if m is not None]
    for encoder in encoders:
        hold_frozen_in(encoder, precision.weight_dtype)
        encoder.to(device)
    ids_2 = dataset.caption_ids_2 if bundle.is_sdxl else None
    cache = build_text_cache(
        dataset.unique_captions(), bundle, dataset.caption_inputs, cfg.model.clip_skip, ids_2
    )
    dataset.attach_text_cache(cache.lookup)


def park_unused(bundle: ModelBundle, needed_later: bool, latents_cached: bool, text_cached: bool) -> None:
    """After caching: the VAE (latents cached) and the text encoders (their outputs cached) leave the GPU, or
    memory when nothing needs them. What the step still encodes with stays.

    The final evaluation and samples during training render with them; without those, they are freed.
    """
    parts = (["vae"] if latents_cached else []) + (["text_encoder", "text_encoder_2"] if text_cached else [])
    for part in parts:
        module = getattr(bundle, part)
        if module is None:
            continue
        if needed_later:
            module.to("cpu")
        else:
            setattr(bundle, part, None)
    release_memory()


def place_trained_models(
    bundle: ModelBundle, network, cfg: TrainConfig, precision: Precision, device, text_cached: bool
) -> None:
    """Frozen weights to the weight dtype, trained ones to theirs, the models in the step to the device."""
    models = [(bundle.unet, network.trains_unet)]
    if not text_cached:  # a cached text encoder is not in the step: it stays where park_unused put it
        models.append((bundle.text_encoder, network.trains_text_encoder))
        if bundle.text_encoder_2 is not None:  # SDXL's second
            models.append((bundle.text_encoder_2, network.trains_text_encoder))
    for model, trained in models:
        hold_frozen_in(model, precision.weight_dtype)
        model.to(device)
        model.train(trained)  # LoRA dropout is active in train mode; SD's own dropout rates are 0
    hold_trained_in(network.parameters(), precision.trained_dtype)
    if cfg.training.gradient_checkpointing:
        bundle.unet.enable_gradient_checkpointing()
        if network.trains_text_encoder:
            bundle.text_encoder.gradient_checkpointing_enable()
            if bundle.text_encoder_2 is not None:
                bundle.text_encoder_2.gradient_checkpointing_enable()
    if cfg.training.compile:
        bundle.unet.compile()  # in place: the module (and the LoRA layers inside it) stay the same objects


def uncompile(module: nn.Module) -> None:
    """Back to eager calls after training: the evaluation's other shapes would only compile again."""
    if getattr(module, "_compiled_call_impl", None) is not None:
        module._compiled_call_impl = None
