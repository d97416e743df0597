"""Which base-model layers get an adapter, and what kohya calls them.

kohya sd-scripts wraps every Linear and 1x1 Conv2d inside the UNet's Transformer2DModel blocks (192 modules
on SD 1.5) and inside the text encoder's attention and MLP blocks (72 modules). With `conv_dim` (kohya's
"LoRA-C3Lier", often called LoCon) it also wraps the layers of ResnetBlock2D, Downsample2D and Upsample2D:
their 3x3 convolutions at conv_dim / conv_alpha, their Linear and 1x1 layers at the normal dim / alpha
(86 more modules on SD 1.5). File keys are the module path with "." replaced by "_", behind `lora_unet_` /
`lora_te_`; text-encoder paths start at `text_model.` as in transformers 4.x, whatever the installed
transformers calls them.

SDXL (kohya's `is_sdxl`): the same layers, named after the SGM module paths of kohya's own SDXL UNet
(inference/lora_sgm_names.py, which the engine reads them with too:
`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), 722 UNet modules on SDXL
base; its two text encoders under `lora_te1_` (CLIP ViT-L, 72 modules) and `lora_te2_` (OpenCLIP ViT-bigG,
192 modules).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from inference.lora_sgm_names import sgm_names
from inference.models.bundle import ModelBundle

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
SDXL_TEXT_ENCODER_PREFIXES = ("lora_te1", "lora_te2")
UNET_TARGET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_TARGET_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGET_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


@dataclass(frozen=True)
class Target:
    """One adapted layer: its path inside its model, its kohya name, and whether it is a kxk convolution."""

    path: str
    kohya_name: str
    component: str  # "unet" | "text_encoder" | "text_encoder_2" (SDXL's second)
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


def unet_targets(unet: nn.Module, conv: bool = False, sdxl: bool = False) -> list[Target]:
    """kohya's UNet LoRA targets: Linear and 1x1 conv layers inside transformer blocks.

    With `conv` (kohya's conv_dim > 0) the resnet and resampling blocks join, 3x3 convolutions included.
    With `sdxl` the names follow kohya's SDXL UNet (SGM module paths) instead of diffusers' paths.
    """
    blocks = UNET_TARGET_BLOCKS + (UNET_CONV_TARGET_BLOCKS if conv else ())
    modules = dict(unet.named_modules())
    rename = _sgm_renamer(unet) if sdxl else str
    return [
        Target(p, kohya_name(UNET_PREFIX, rename(p)), "unet", spatial=is_spatial_conv(modules[p]))
        for p in _find(unet, blocks, with_spatial=conv)
    ]


def _sgm_renamer(unet: nn.Module):
    """diffusers module path → the SGM path kohya's SDXL UNet has for it; a path without one is an error."""
    names = sgm_names(unet)

    def rename(path: str) -> str:
        if path not in names:
            raise ValueError(f"no SGM name for UNet module {path!r}: not a layout kohya's SDXL UNet has")
        return names[path]

    return rename


def text_encoder_targets(
    text_encoder: nn.Module, prefix: str = TEXT_ENCODER_PREFIX, component: str = "text_encoder"
) -> list[Target]:
    """kohya's text-encoder LoRA targets: q/k/v/out_proj and fc1/fc2 of every CLIP layer."""
    # transformers >= 5.6 dropped CLIPTextModel's `text_model.` level; the file format keeps it.
    lead = "" if hasattr(text_encoder, "text_model") else "text_model."
    return [
        Target(p, kohya_name(prefix, lead + p), component)
        for p in _find(text_encoder, TEXT_ENCODER_TARGET_BLOCKS)
    ]


def encoder_targets(bundle: ModelBundle) -> list[tuple[nn.Module, list[Target]]]:
    """Each text encoder with its targets: SD 1/2's one under `lora_te`, SDXL's two under `lora_te1` /
    `lora_te2` (kohya's LORA_PREFIX_TEXT_ENCODER1/2), the first encoder first as in kohya's files."""
    if not bundle.is_sdxl:
        return [(bundle.text_encoder, text_encoder_targets(bundle.text_encoder))]
    first, second = SDXL_TEXT_ENCODER_PREFIXES
    return [
        (bundle.text_encoder, text_encoder_targets(bundle.text_encoder, first)),
        (bundle.text_encoder_2, text_encoder_targets(bundle.text_encoder_2, second, "text_encoder_2")),
    ]
