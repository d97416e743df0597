"""`model=tiny_sdxl`: the SDXL architecture at tiny widths, random weights from a seed.

The same diffusers/transformers classes as SDXL base: a UNet with `text_time` size/crop conditioning and
linear-projection transformers, CLIP-L-like and bigG-like text encoders (the second with its projection,
whose pooled output feeds the UNet's added embedding), so key names, prompt encoding and pipelines follow
the real code paths. The widths are those of diffusers' own SDXL test components.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.tiny import tiny_vae
from inference.models.tokenizer import build_tokenizer

TEXT_WIDTH = 32  # each encoder's hidden size; the UNet reads both side by side (64)
TIME_EMBED = 8  # addition_time_embed_dim: each of the six size/crop numbers gets this many channels
SDXL_LATENT_SCALE = 0.13025  # SDXL's VAE scaling factor


def tiny_sdxl_unet() -> UNet2DConditionModel:
    """A small SDXL UNet: no attention at the top level, then 1 and 2 transformer layers, as SDXL's pattern."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_WIDTH,  # time ids + pooled text
        cross_attention_dim=2 * TEXT_WIDTH,
        norm_num_groups=1,
    )


def _text_config(tokenizer, projection: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        hidden_act="gelu" if projection else "quick_gelu",  # bigG uses gelu, CLIP-L quick_gelu
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tokenizers():
    with tempfile.TemporaryDirectory() as folder:
        first = build_tokenizer(folder)
    with tempfile.TemporaryDirectory() as folder:
        second = build_tokenizer(folder)
    # SDXL's second tokenizer pads with "!" (OpenCLIP's zero token), the first with the end token.
    second.pad_token = "!"
    return first, second


def build_tiny_sdxl(seed: int = 0) -> ModelBundle:
    """Random tiny SDXL components, identical for the same seed."""
    tokenizer, tokenizer_2 = _tokenizers()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(_text_config(tokenizer, projection=False))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, projection=True))
        unet = tiny_sdxl_unet()
        vae = tiny_vae()
    vae.register_to_config(scaling_factor=SDXL_LATENT_SCALE)
    return ModelBundle(
        unet, vae, text_encoder, tokenizer, sd_noise_scheduler(), source="tiny_sdxl",
        base_model_version="sdxl_base_v1-0", text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )  # fmt: skip
