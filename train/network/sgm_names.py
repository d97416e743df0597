"""SDXL UNet module paths as kohya names them: Stability's SGM layout, not diffusers' block names.

kohya trains SDXL on its own UNet (sd-scripts library/sdxl_original_unet.py), built in the layout of the
original SDXL checkpoint, so its LoRA files (and everything that reads them: A1111, ComfyUI, Forge,
diffusers) use those module paths:

- `input_blocks.0` is conv_in; down block b's layer i sits at `input_blocks.{1 + b * per + i}` with its
  resnet at `.0` and its transformer at `.1`; the block's downsampler at `input_blocks.{(b + 1) * per}.0.op`
  (per = layers_per_block + 1);
- `middle_block.0` / `.2` are the mid resnets, `.1` the mid transformer;
- up block b's layer i sits at `output_blocks.{b * per + i}` (resnet `.0`, transformer `.1`), its upsampler
  after the last layer's resnet and transformer: `.2.conv` (`.1.conv` in a block without attention);
- inside a resnet conv1 / time_emb_proj / conv2 / conv_shortcut are `in_layers.2` / `emb_layers.1` /
  `out_layers.3` / `skip_connection`; transformers keep diffusers' inner names (proj_in,
  transformer_blocks.k.attn1.to_q, ff.net.0.proj, …).
"""

from __future__ import annotations

import re

from torch import nn

RESNET_LAYERS = {
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_LAYER = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_SAMPLER = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv")


def _inner(kind: str, rest: str) -> str:
    """The path inside a resnet (renamed) or transformer (kept as is)."""
    if kind == "attentions":
        return rest
    head, _, tail = rest.partition(".")
    if head not in RESNET_LAYERS or tail:
        raise ValueError(f"no SGM name for resnet layer {rest!r}")
    return RESNET_LAYERS[head]


def sgm_path(path: str, layers_per_block: int, up_attention: list[bool]) -> str:
    """The SGM module path of a diffusers UNet module path inside a block (`down_blocks.1.attentions.0.proj_in`
    → `input_blocks.4.1.proj_in`). `up_attention[b]`: whether up block b has transformers."""
    per = layers_per_block + 1
    if m := _LAYER.fullmatch(path):
        side, block, kind, index, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        slot = 1 if kind == "attentions" else 0
        if side == "down_blocks":
            return f"input_blocks.{1 + block * per + index}.{slot}.{_inner(kind, rest)}"
        return f"output_blocks.{block * per + index}.{slot}.{_inner(kind, rest)}"
    if m := _MID.fullmatch(path):
        kind, index, rest = m[1], int(m[2]), m[3]
        position = 1 if kind == "attentions" else 2 * index
        return f"middle_block.{position}.{_inner(kind, rest)}"
    if m := _SAMPLER.fullmatch(path):
        block = int(m[2])
        if m[1] == "down_blocks":
            return f"input_blocks.{(block + 1) * per}.0.op"
        return f"output_blocks.{block * per + per - 1}.{2 if up_attention[block] else 1}.conv"
    raise ValueError(f"no SGM name for UNet module {path!r}")


def sgm_namer(unet: nn.Module):
    """`sgm_path` bound to `unet`'s block layout (a diffusers UNet2DConditionModel with an int
    layers_per_block, as SDXL's)."""
    config = unet.config
    up_attention = ["CrossAttn" in kind for kind in config.up_block_types]
    return lambda path: sgm_path(path, int(config.layers_per_block), up_attention)
