"""Which base-model layers get an adapter, and what kohya calls them.

kohya sd-scripts wraps every Linear and 1x1 Conv2d inside the UNet's Transformer2DModel blocks (192 modules
on SD 1.5) and inside the text encoder's attention and MLP blocks (72 modules). With `conv_dim` (kohya's
"LoRA-C3Lier", often called LoCon) it also wraps the layers of ResnetBlock2D, Downsample2D and Upsample2D:
their 3x3 convolutions at conv_dim / conv_alpha, their Linear and 1x1 layers at the normal dim / alpha
(86 more modules on SD 1.5). File keys are the module path with "." replaced by "_", behind `lora_unet_` /
`lora_te_`; text-encoder paths start at `text_model.` as in transformers 4.x, whatever the installed
transformers calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
UNET_TARGET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_TARGET_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGET_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


@dataclass(frozen=True)
class Target:
    """One adapted layer: its path inside its model, its kohya name, and whether it is a kxk convolution."""

    path: str
    kohya_name: str
    component: str  # "unet" | "text_encoder"
    spatial: bool = False  # a kxk conv (k > 1): trained at conv_dim / conv_alpha instead of dim / alpha


def is_spatial_conv(module: nn.Module) -> bool:
    """A convolution whose kernel is larger than 1x1; kohya adapts these only when conv_dim is set."""
    return isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)


def _is_adaptable(module: nn.Module, with_spatial: bool) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and (with_spatial or not is_spatial_conv(module))


def _find(model: nn.Module, block_classes: tuple[str, ...], with_spatial: bool = False) -> list[str]:
    paths: list[str] = []
    for block_path, block in model.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_path, child in block.named_modules():
            if child_path and _is_adaptable(child, with_spatial):
                paths.append(f"{block_path}.{child_path}")
    return list(dict.fromkeys(paths))


def kohya_name(prefix: str, path: str) -> str:
    """`lora_unet_down_blocks_0_..._to_out_0` from a prefix and a module path."""
    return f"{prefix}_{path}".replace(".", "_")


def unet_targets(unet: nn.Module, conv: bool = False) -> list[Target]:
    """kohya's UNet LoRA targets: Linear and 1x1 conv layers inside transformer blocks.

    With `conv` (kohya's conv_dim > 0) the resnet and resampling blocks join, 3x3 convolutions included.
    """
    blocks = UNET_TARGET_BLOCKS + (UNET_CONV_TARGET_BLOCKS if conv else ())
    modules = dict(unet.named_modules())
    return [
        Target(p, kohya_name(UNET_PREFIX, p), "unet", spatial=is_spatial_conv(modules[p]))
        for p in _find(unet, blocks, with_spatial=conv)
    ]


def text_encoder_targets(text_encoder: nn.Module) -> list[Target]:
    """kohya's text-encoder LoRA targets: q/k/v/out_proj and fc1/fc2 of every CLIP layer."""
    # transformers >= 5.6 dropped the `text_model.` level; the file format keeps it.
    lead = "" if hasattr(text_encoder, "text_model") else "text_model."
    return [
        Target(p, kohya_name(TEXT_ENCODER_PREFIX, lead + p), "text_encoder")
        for p in _find(text_encoder, TEXT_ENCODER_TARGET_BLOCKS)
    ]
