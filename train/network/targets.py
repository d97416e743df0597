"""Which base-model layers get an adapter, and what kohya calls them.

kohya sd-scripts wraps every Linear and 1x1 Conv2d inside the UNet's Transformer2DModel blocks (192 modules
on SD 1.5) and inside the text encoder's attention and MLP blocks (72 modules). File keys are the module
path with "." replaced by "_", behind `lora_unet_` / `lora_te_`; text-encoder paths start at `text_model.`
as in transformers 4.x, whatever the installed transformers calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
UNET_TARGET_BLOCKS = ("Transformer2DModel",)
TEXT_ENCODER_TARGET_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


@dataclass(frozen=True)
class Target:
    """One adapted layer: its path inside its model and its kohya name."""

    path: str
    kohya_name: str
    component: str  # "unet" | "text_encoder"


def _is_adaptable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)


def _find(model: nn.Module, block_classes: tuple[str, ...]) -> list[str]:
    paths: list[str] = []
    for block_path, block in model.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_path, child in block.named_modules():
            if child_path and _is_adaptable(child):
                paths.append(f"{block_path}.{child_path}")
    return list(dict.fromkeys(paths))


def kohya_name(prefix: str, path: str) -> str:
    """`lora_unet_down_blocks_0_..._to_out_0` from a prefix and a module path."""
    return f"{prefix}_{path}".replace(".", "_")


def unet_targets(unet: nn.Module) -> list[Target]:
    """kohya's UNet LoRA targets: Linear and 1x1 conv layers inside transformer blocks."""
    return [Target(p, kohya_name(UNET_PREFIX, p), "unet") for p in _find(unet, UNET_TARGET_BLOCKS)]


def text_encoder_targets(text_encoder: nn.Module) -> list[Target]:
    """kohya's text-encoder LoRA targets: q/k/v/out_proj and fc1/fc2 of every CLIP layer."""
    # transformers >= 5.6 dropped the `text_model.` level; the file format keeps it.
    lead = "" if hasattr(text_encoder, "text_model") else "text_model."
    return [
        Target(p, kohya_name(TEXT_ENCODER_PREFIX, lead + p), "text_encoder")
        for p in _find(text_encoder, TEXT_ENCODER_TARGET_BLOCKS)
    ]
