"""The original (LDM / SGM) module path of each diffusers UNet module, for LoRA key names.

kohya's SDXL networks name UNet layers by SDXL's original layout (`library/sdxl_original_unet.py`), e.g.
`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `lora_unet_middle_block_1_proj_in`,
`lora_unet_output_blocks_2_0_in_layers_2`; A1111 also accepts that layout for SD 1/2 (its fallback of
`lora_unet` → `diffusion_model`). Our UNet is diffusers', so each of its module paths is mapped back:

* level l of L resnets per down block starts at `input_blocks.(1 + l*(L+1))`; resnet j is `.0`, its
  transformer `.1`; the downsampler is `input_blocks.(1 + l*(L+1) + L).0.op`;
* the middle block is resnet, transformer, resnet: `middle_block.0/1/2`;
* up level l holds L+1 resnets from `output_blocks.(l*(L+1))`, its upsampler in the last of them, after
  the transformer when the level has one (`.2.conv`) or straight after the resnet (`.1.conv`);
* inside a resnet: norm1/conv1 → in_layers.0/2, time_emb_proj → emb_layers.1, norm2/conv2 →
  out_layers.0/3, conv_shortcut → skip_connection; transformers keep their inner names.
"""

from __future__ import annotations

import re

from inference.models.ldm_export import RESNET

_RESNET_PARTS = RESNET  # the same renaming the single-file writer uses

_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_BLOCK = re.compile(
    r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.*))?$"
)
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?$")


def _inner(kind: str, rest: str | None) -> str | None:
    """The path inside a block: resnet parts renamed, transformer parts kept; None for unknown ones."""
    if rest is None:
        return ""
    if kind == "resnets":
        head, _, tail = rest.partition(".")
        if head not in _RESNET_PARTS:
            return None
        return "." + _RESNET_PARTS[head] + ("." + tail if tail else "")
    return "." + rest


def sgm_module_path(path: str, layers_per_block: int, up_has_attention: list[bool]) -> str | None:
    """The original-layout path of diffusers UNet module `path`, or None where there is none.

    up_has_attention[l]: whether up block l has transformers (SD: all but the first; SDXL: the first two).
    """
    if path in _TOP_LEVEL:
        return _TOP_LEVEL[path]
    per_level = layers_per_block + 1
    if match := _MID.match(path):
        kind, index, rest = match.groups()
        inner = _inner(kind, rest)
        position = 1 if kind == "attentions" else 2 * int(index)
        return None if inner is None else f"middle_block.{position}{inner}"
    match = _BLOCK.match(path)
    if match is None:
        return None
    side, level, kind, index, rest = match.groups()
    level, index = int(level), int(index)
    if kind in ("downsamplers", "upsamplers"):
        if rest != "conv":
            return None
        if side == "down_blocks":
            return f"input_blocks.{1 + level * per_level + layers_per_block}.0.op"
        return (
            f"output_blocks.{level * per_level + layers_per_block}.{2 if up_has_attention[level] else 1}.conv"
        )
    inner = _inner(kind, rest)
    if inner is None:
        return None
    part = 0 if kind == "resnets" else 1
    if side == "down_blocks":
        return f"input_blocks.{1 + level * per_level + index}.{part}{inner}"
    return f"output_blocks.{level * per_level + index}.{part}{inner}"


def sgm_names(unet) -> dict[str, str]:
    """diffusers module path → original-layout path, for every module of `unet` that has one."""
    layers = unet.config.layers_per_block
    if not isinstance(layers, int):  # per-level counts: not a layout the original UNet code builds
        return {}
    up_has_attention = [hasattr(block, "attentions") for block in unet.up_blocks]
    names = {}
    for path, _ in unet.named_modules():
        sgm = sgm_module_path(path, layers, up_has_attention)
        if sgm is not None:
            names[path] = sgm
    return names
