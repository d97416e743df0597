"""The toy base model's components: SD 1.5's classes at small widths, latents at 1/8 with 4 channels."""

from __future__ import annotations

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from inference.models.tiny import tiny_text_encoder, tiny_vae

TEXT_WIDTH = 64


def toy_vae() -> AutoencoderKL:
    """A 0.98 M-parameter VAE: 64 x 64 x 3 pictures ↔ 8 x 8 x 4 latents, as SD's f = 8.

    The third block is 64 wide rather than 32: at 32 the VAE could not draw smooth shading over light
    backgrounds (the style's vignette on white scored 0.61 through it), however well a LoRA learned it.
    """
    return tiny_vae(channels=(16, 32, 64, 64), groups=16)


def toy_text_encoder(vocab_size: int, bos: int, eos: int) -> CLIPTextModel:
    """A 2-layer CLIP text encoder, 64 wide, reading SD's 77-token context."""
    return tiny_text_encoder(vocab_size, bos, eos, hidden=TEXT_WIDTH, mlp_ratio=4)


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
