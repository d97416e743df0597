"""Write LoRA files as A1111/ComfyUI/diffusers expect them: kohya keys, `ss_*` string metadata, atomically."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save

from data.atomic import write_bytes_atomic
from train.config import NetworkConfig, TrainConfig, TrainingConfig

if TYPE_CHECKING:
    from inference.models.bundle import ModelBundle

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SD2_TEXT_ENCODER_WIDTH = 1024
SDXL_VERSION = "sdxl_base_v1-0"  # kohya's ss_base_model_version for SDXL, v-prediction or not
SDXL_ARCHITECTURE = "stable-diffusion-xl-v1-base"  # kohya's sai_model_spec ARCH_SD_XL_V1_BASE
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"  # what kohya names an SDXL LoRA's


def canonical_safetensors(blob: bytes) -> bytes:
    """The same file with its JSON header in sorted key order.

    safetensors writes the metadata in hash-map order, which changes from process to process; sorting it
    makes equal contents give equal bytes. Tensor offsets are relative to the data section, so they hold.
    """
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + blob[8 + size :]


def save_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` to `path` through a temporary file and a rename, so a kill never leaves half a file."""
    return write_bytes_atomic(path, canonical_safetensors(save(tensors, metadata=metadata)))


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "None" if value is None else str(value)


def network_args(net: NetworkConfig) -> dict[str, str]:
    """kohya's `--network_args` as `ss_network_args` records them: strings, only the ones in use.

    conv_alpha is written even when left at its default, so the header alone tells the conv scale.
    """
    args = {}
    if net.conv_dim:
        args = {"conv_dim": str(net.conv_dim), "conv_alpha": str(float(net.resolved_conv_alpha))}
    extra = ("rank_dropout", "module_dropout", "loraplus_lr_ratio", "loraplus_unet_lr_ratio")
    for key in (*extra, "loraplus_text_encoder_lr_ratio"):
        if getattr(net, key):
            args[key] = str(getattr(net, key))
    return args


def _dataset_metadata(cfg: TrainConfig, dataset: dict[str, Any]) -> dict[str, Any]:
    """kohya's dataset keys: caption handling, buckets, and what the dataset found (images, tags, buckets)."""
    d = cfg.dataset
    meta: dict[str, Any] = {
        "ss_shuffle_caption": d.shuffle_caption,
        "ss_keep_tokens": d.keep_tokens,
        "ss_flip_aug": d.flip_aug,
        "ss_enable_bucket": d.enable_bucket,
        "ss_min_bucket_reso": d.min_bucket_reso if d.enable_bucket else None,
        "ss_max_bucket_reso": d.max_bucket_reso if d.enable_bucket else None,
        "ss_bucket_no_upscale": d.bucket_no_upscale if d.enable_bucket else None,
        "ss_caption_dropout_rate": d.caption_dropout_rate,
        "ss_max_token_length": d.max_token_length if d.max_token_length != 75 else None,
        "ss_weighted_captions": d.weighted_captions,
        "ss_masked_loss": d.masked_loss,
        "ss_prior_loss_weight": d.prior_loss_weight,
    }
    for key in (
        "num_train_images",
        "num_reg_images",
        "dataset_dirs",
        "reg_dataset_dirs",
        "tag_frequency",
        "bucket_info",
    ):
        if key in dataset:
            meta[f"ss_{key}"] = dataset[key]
    return meta


def model_facts(bundle: ModelBundle) -> dict[str, Any]:
    """What the header says about the base model; the run merges these into the facts of lora_metadata."""
    return {
        "base_model_version": bundle.base_model_version,
        "prediction_type": bundle.noise_scheduler.config.prediction_type,
        "text_encoder_hidden_size": bundle.text_encoder.config.hidden_size,
        "model_name": bundle.source,
        "sdxl": bundle.is_sdxl,
    }


def is_sdxl(facts: dict[str, Any]) -> bool:
    """Whether the run's base model is SDXL (its loaded bundle, or kohya's version string says so)."""
    return bool(facts.get("sdxl")) or str(facts.get("base_model_version", "")).startswith("sdxl")


def model_family(facts: dict[str, Any]) -> tuple[bool, bool]:
    """(SD 2.x, v-prediction) from the run's facts; SD 1.x with epsilon prediction when they say nothing.

    SD 2.x is told by its OpenCLIP ViT-H text encoder (hidden size 1024; SD 1.x's CLIP ViT-L has 768).
    """
    v2 = str(facts.get("base_model_version", "sd_v1")).startswith("sd_v2")
    v2 = v2 or facts.get("text_encoder_hidden_size") == SD2_TEXT_ENCODER_WIDTH
    return v2, facts.get("prediction_type", "epsilon") == "v_prediction"


def base_model_version(v2: bool, v_prediction: bool) -> str:
    """kohya's `ss_base_model_version`: sd_v1, sd_v2, with `_v` for v-prediction (sd_v2_v)."""
    return ("sd_v2" if v2 else "sd_v1") + ("_v" if v_prediction else "")


def _modelspec(cfg: TrainConfig, v2: bool, v_prediction: bool, sdxl: bool) -> dict[str, str]:
    """The `modelspec.*` keys (Stability's model card header) that tools show for a LoRA; kohya's
    sai_model_spec names SDXL LoRAs after the SGM implementation, SD 1/2 ones after diffusers."""
    if sdxl:
        architecture = SDXL_ARCHITECTURE
    elif v2:
        architecture = "stable-diffusion-v2-768-v" if v_prediction else "stable-diffusion-v2-512"
    else:
        architecture = "stable-diffusion-v1"
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": SGM_IMPLEMENTATION if sdxl else "diffusers",
        "modelspec.title": cfg.name,
        "modelspec.resolution": f"{cfg.dataset.resolution}x{cfg.dataset.resolution}",
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
    }


def _noise_and_loss_metadata(t: TrainingConfig) -> dict[str, Any]:
    """The noise and loss options of `cfg.training`, as kohya's header names them (None where unused)."""
    return {
        "ss_noise_offset": t.noise_offset if t.noise_offset else None,
        "ss_multires_noise_iterations": t.multires_noise_iterations or None,
        "ss_multires_noise_discount": t.multires_noise_discount if t.multires_noise_iterations else None,
        "ss_min_snr_gamma": t.min_snr_gamma if t.min_snr_gamma else None,
        "ss_ip_noise_gamma": t.ip_noise_gamma if t.ip_noise_gamma else None,
        "ss_ip_noise_gamma_random_strength": t.ip_noise_gamma_random_strength if t.ip_noise_gamma else None,
        "ss_zero_terminal_snr": t.zero_terminal_snr,
        "ss_debiased_estimation": t.debiased_estimation_loss,
        "ss_scale_v_pred_loss_like_noise_pred": t.scale_v_pred_loss_like_noise_pred,
        "ss_loss_type": t.loss_type,
        "ss_huber_schedule": t.huber_schedule if t.loss_type in ("huber", "smooth_l1") else None,
        "ss_huber_c": t.huber_c if t.loss_type in ("huber", "smooth_l1") else None,
        "ss_huber_scale": t.huber_scale if t.loss_type in ("huber", "smooth_l1") else None,
    }


def lora_metadata(cfg: TrainConfig, facts: dict[str, Any]) -> dict[str, str]:
    """kohya's `ss_*` header for this run. `facts` holds what only the run knows (steps, epoch, dataset).

    Time stamps and session ids are left out on purpose: the same config and seed give a byte-identical
    file. When a run happened is recorded in the run folder instead.
    """
    opt, net, t = cfg.optimizer, cfg.network, cfg.training
    v2, v_prediction = model_family(facts)
    sdxl = is_sdxl(facts)
    v2 = v2 and not sdxl
    te_lrs = opt.text_encoder_lrs
    meta: dict[str, Any] = {
        "ss_network_dim": net.dim,
        "ss_network_alpha": net.alpha,
        "ss_network_dropout": net.dropout,
        "ss_base_model_version": SDXL_VERSION if sdxl else base_model_version(v2, v_prediction),
        "ss_v2": v2,
        "ss_v_parameterization": v_prediction,
        "ss_sd_model_name": facts.get("model_name", cfg.model.path or cfg.model.kind),
        "ss_output_name": cfg.name,
        "ss_seed": cfg.seed,
        "ss_learning_rate": opt.lr,
        "ss_unet_lr": opt.part_lrs[0],
        "ss_text_encoder_lr": list(te_lrs) if len(te_lrs) == 2 else opt.part_lrs[1],  # SDXL's two as a list
        "ss_optimizer": facts.get("optimizer", opt.name),
        "ss_lr_scheduler": cfg.scheduler.name,
        "ss_lr_warmup_steps": facts.get("warmup_steps", 0),
        "ss_max_grad_norm": t.max_grad_norm,
        "ss_mixed_precision": facts.get("mixed_precision", t.mixed_precision),  # after any CPU fallback
        "ss_gradient_checkpointing": t.gradient_checkpointing,
        "ss_gradient_accumulation_steps": t.gradient_accumulation_steps,
        **_noise_and_loss_metadata(t),
        "ss_clip_skip": cfg.model.clip_skip if cfg.model.clip_skip > 1 else None,
        "ss_resolution": f"({cfg.dataset.resolution}, {cfg.dataset.resolution})",
        "ss_batch_size_per_device": t.batch_size,
        "ss_total_batch_size": t.batch_size * t.gradient_accumulation_steps * facts.get("num_processes", 1),
        "ss_steps": facts["steps"],
        "ss_epoch": facts["epoch"],
        "ss_num_epochs": facts["num_epochs"],
        "ss_max_train_steps": facts["max_train_steps"],
        "ss_num_batches_per_epoch": facts["num_batches_per_epoch"],
    }
    meta |= _dataset_metadata(cfg, facts.get("dataset", {}))
    meta |= _modelspec(cfg, v2, v_prediction, sdxl)
    # ss_network_module, ss_network_args: the network's own header, last, so it may replace what does not
    # fit it (a full fine-tune has no rank and is no LoRA in modelspec.architecture)
    meta |= facts.get("network", {})
    meta["lorasmith_config"] = facts.get("config_yaml", "")
    return {key: _text(value) for key, value in meta.items()}
