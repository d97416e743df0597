"""The toy base model's components: SD 1.5's classes at small widths, latents at 1/8 with 4 channels."""

from __future__ import annotations

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

TEXT_WIDTH = 64


def toy_vae() -> AutoencoderKL:
    """A 0.76 M-parameter VAE: 64 x 64 x 3 pictures ↔ 8 x 8 x 4 latents, as SD's f = 8."""
    return AutoencoderKL(
        block_out_channels=(16, 32, 32, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=16,
        layers_per_block=1,
        sample_size=64,
    )


def toy_text_encoder(vocab_size: int, bos: int, eos: int) -> CLIPTextModel:
    """A 2-layer CLIP text encoder, 64 wide, reading SD's 77-token context."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_WIDTH,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )


def toy_unet() -> UNet2DConditionModel:
    """A 5.8 M-parameter UNet over 8 x 8 x 4 latents with SD's block types (cross-attention down and up)."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=32,
    )
