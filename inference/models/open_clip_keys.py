"""SD 2.x's OpenCLIP text encoder (LDM layout, `cond_stage_model.model.*`) as a transformers CLIPTextModel.

OpenCLIP's text tower is CLIP's architecture under other names, with two differences of layout: the
attention's q, k and v projections are one stacked `attn.in_proj_weight` (3·D, D) / `in_proj_bias` (3·D,)
(q first), and the positional embedding is a bare tensor. ViT-H/14 has width 1024, 16 heads, MLP 4096,
24 layers and plain GELU (OpenAI's CLIP ViT-L uses quick-GELU). `text_projection` and `logit_scale` belong
to CLIP's contrastive head, which SD never uses, and are not loaded.

Which layer conditions the UNet: SD 2's LDM config reads the text at `layer: penultimate` (the output of
layer 23 of 24, then `ln_final`). The CLIPTextModel is built with the layers up to that one, so its
ordinary output (last layer + final LayerNorm) *is* SD 2's conditioning, as A1111 renders SD 2 and as
kohya and diffusers build it (23 layers). `clip_skip` then counts from there: 1 (the default) is SD 2's own
penultimate layer; N > 1 goes N-1 layers further back (kohya's count for `--v2`). A1111 ignores clip skip
for SD 2, so only clip_skip=1 renders there as it trained.

The tokenizer: OpenCLIP's BPE vocabulary and merges are CLIP ViT-L/14's (49,408 tokens, same BOS/EOS ids);
only the padding differs: OpenCLIP pads with id 0 (the token `!`) after the end token, where SD 1 pads
with EOS. `open_clip_tokenizer` makes an SD 1 tokenizer into SD 2's by setting that pad token, which is
what the SD 2 repositories' tokenizer files declare (pad_token `!`).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers import CLIPTokenizer

from inference.models.errors import ModelLoadError

PREFIX = "cond_stage_model.model."
BLOCKS = "transformer.resblocks."
PAD_TOKEN = "!"  # OpenCLIP's padding, id 0 in CLIP's vocabulary

State = dict[str, torch.Tensor]

# OpenCLIP name → CLIPTextModel name (without transformers' optional `text_model.` nesting).
TOP_LEVEL = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}
# Inside `transformer.resblocks.N.` → inside `encoder.layers.N.`; each takes `.weight` and `.bias`.
PER_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
STACKED = "attn.in_proj_"  # + weight / bias: q, k, v stacked along dim 0
SPLIT_INTO = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
NOT_LOADED = ("text_projection", "logit_scale", "attn_mask")  # contrastive head; the causal-mask buffer
# LDM's FrozenOpenCLIPEmbedder `layer`: how many of the last blocks the conditioning leaves out.
LAYERS_LEFT_OUT = {"last": 0, "penultimate": 1}


def layers_left_out(layer: str) -> int:
    """0 for `layer: last`, 1 for `layer: penultimate` (SD 2); anything else is an error."""
    if layer not in LAYERS_LEFT_OUT:
        raise ModelLoadError(
            f"cond_stage_config.params.layer={layer!r} is not an OpenCLIP text layer LDM knows; use "
            f"{' or '.join(LAYERS_LEFT_OUT)} (SD 2 models use penultimate)."
        )
    return LAYERS_LEFT_OUT[layer]


def block_count(state: State, prefix: str = PREFIX) -> int:
    """How many transformer blocks the OpenCLIP text encoder under `prefix` has (24 for ViT-H/14)."""
    pattern = re.compile(re.escape(prefix + BLOCKS) + r"(\d+)\.")
    found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def text_state(state: State, left_out: int = 1, prefix: str = PREFIX, projection: bool = False) -> State:
    """CLIPTextModel weights (bare keys) of the OpenCLIP text encoder under `prefix`, without its last
    `left_out` blocks. A key this mapping does not know keeps its name, so the loader reports it.

    With `projection` (SDXL's ViT-bigG, a CLIPTextModelWithProjection) `text_projection` (width, proj), which
    OpenCLIP multiplies from the right, becomes the Linear weight `text_projection.weight` (proj, width).
    """
    kept = block_count(state, prefix) - left_out
    if kept < 1:
        raise ModelLoadError(
            f"the OpenCLIP text encoder under `{prefix}` has {block_count(state, prefix)} blocks, too few to "
            f"leave out the last {left_out} (cond_stage_config.params.layer)."
        )
    out: State = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if projection and name == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
            continue
        if name in NOT_LOADED:
            continue
        if not name.startswith(BLOCKS):
            out[TOP_LEVEL.get(name, key)] = value  # an unknown key keeps its full name
            continue
        index, _, inner = name[len(BLOCKS) :].partition(".")
        if int(index) < kept:
            out.update(_block_tensors(f"encoder.layers.{index}.", inner, value, name, prefix))
    if "embeddings.position_embedding.weight" not in out:
        raise ModelLoadError(f"the OpenCLIP text encoder under `{prefix}` has no positional_embedding.")
    return out


def _block_tensors(target: str, inner: str, value: torch.Tensor, name: str, prefix: str) -> State:
    """The CLIPTextModel tensors of one block tensor: renamed, or q/k/v split from the stacked in_proj."""
    part, _, kind = inner.rpartition(".")
    if inner.startswith(STACKED):
        kind = inner[len(STACKED) :]
        if value.shape[0] % 3:
            raise ModelLoadError(f"{prefix}{name} has {value.shape[0]} rows, not q, k and v stacked.")
        return {
            f"{target}{proj}.{kind}": chunk.clone()
            for proj, chunk in zip(SPLIT_INTO, value.chunk(3), strict=True)
        }
    if part in PER_LAYER:
        return {f"{target}{PER_LAYER[part]}.{kind}": value}
    return {f"{prefix}{name}": value}  # unknown: reported as unexpected by the loader


def text_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The CLIPTextConfig settings that differ from OpenAI's CLIP: plain GELU (config values still win)."""
    return {"hidden_act": "gelu", **overrides}


def open_clip_tokenizer(tokenizer: CLIPTokenizer) -> CLIPTokenizer:
    """`tokenizer` (CLIP's BPE) padding with `!` (id 0) after the end token, as OpenCLIP does."""
    if tokenizer.convert_tokens_to_ids(PAD_TOKEN) in (None, tokenizer.unk_token_id):
        raise ModelLoadError(
            f"the tokenizer has no {PAD_TOKEN!r} token, so it is not CLIP's BPE; give SD 2's tokenizer (or "
            "any SD 1.x one: SD 2 uses the same vocabulary) as model.tokenizer=<folder>."
        )
    tokenizer.pad_token = PAD_TOKEN
    return tokenizer
