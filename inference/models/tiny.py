"""Small Stable-Diffusion-architecture models built in code: `model=tiny` and `model=sd15_arch`.

Both use the same diffusers/transformers classes as SD 1.5, so every code path (LoRA key names, saving,
loading into other tools) is the real one; only widths and weights differ. Weights are random from a seed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.tokenizer import build_tokenizer

SD15_ARCH_DIR = Path(__file__).resolve().parents[2] / "models" / "sd15_arch"


def tiny_unet(cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A 1 M-parameter UNet with SD's block types: two cross-attention levels and a mid block."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae(channels: tuple[int, ...] = (8, 16, 16, 16), groups: int = 8) -> AutoencoderKL:
    """A small VAE with SD's geometry: 4 latent channels at 1/8 of the image size (80 k parameters by default)."""
    return AutoencoderKL(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=groups,
        layers_per_block=1,
        sample_size=64,
    )


def tiny_text_encoder(
    vocab_size: int, bos: int, eos: int, hidden: int = 32, mlp_ratio: int = 2
) -> CLIPTextModel:
    """A 2-layer CLIP text encoder, `hidden` wide, for a tokenizer of `vocab_size` tokens."""
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * mlp_ratio,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config)


def _tokenizer():
    with tempfile.TemporaryDirectory() as folder:
        return build_tokenizer(folder)


def build_tiny(seed: int = 0) -> ModelBundle:
    """Random tiny SD components, identical for the same seed."""
    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = tiny_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
        unet = tiny_unet(cross_attention_dim=text_encoder.config.hidden_size)
        vae = tiny_vae()
    return ModelBundle(unet, vae, text_encoder, tokenizer, sd_noise_scheduler(), source="tiny")


def build_sd15_arch(seed: int = 0, folder: Path = SD15_ARCH_DIR) -> ModelBundle:
    """The real SD 1.5 architecture (860 M UNet, 123 M CLIP-L) from shipped configs, random weights.

    The tokenizer is the locally written one (the real CLIP vocabulary is not shipped), so token ids differ
    from SD 1.5; module names and shapes are exact, which is what benchmarks and key-name checks need.
    """
    tokenizer = _tokenizer()
    te_config = json.loads((folder / "text_encoder" / "config.json").read_text())
    te_config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    te_config["pad_token_id"] = tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_config))
    return ModelBundle(unet, vae, text_encoder, tokenizer, sd_noise_scheduler(), source="sd15_arch")
