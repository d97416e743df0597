"""The toy SDXL's components: SDXL's classes and layout at toy widths, over the toy VAE's 8 x 8 x 4 latents."""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_WIDTHS = (64, 64)  # first (CLIP ViT-L-like) and second (OpenCLIP bigG-like) encoder
POOLED_WIDTH = 64  # the second encoder's projection: the pooled text the UNet's added embedding reads
TEXT_LAYERS = 3  # SDXL reads the penultimate layer, so 2 of them shape the cross-attention tokens
TIME_EMBED = 16  # addition_time_embed_dim: channels for each of the six size/crop numbers


def toy_xl_unet() -> UNet2DConditionModel:
    """A UNet with SDXL's pattern: no attention at the first level, then transformer layers (linear
    projections), `text_time` micro-conditioning, cross-attention over both encoders side by side."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 96, 128),  # 5.7 M parameters, as models/toy's 5.8 M UNet
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 1),  # a second layer at the bottom: 8.1 M, over 30 MB
        attention_head_dim=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + POOLED_WIDTH,
        cross_attention_dim=sum(TEXT_WIDTHS),
        norm_num_groups=32,
    )


def _text_config(tokenizer: CLIPTokenizer, width: int, second: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=POOLED_WIDTH,
        hidden_act="gelu" if second else "quick_gelu",  # bigG uses gelu, CLIP-L quick_gelu
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def toy_xl_text_encoders(
    tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer
) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """The two text encoders, SDXL's classes: the second has the projection that gives the pooled text."""
    return (
        CLIPTextModel(_text_config(tokenizer, TEXT_WIDTHS[0], second=False)),
        CLIPTextModelWithProjection(_text_config(tokenizer_2, TEXT_WIDTHS[1], second=True)),
    )
