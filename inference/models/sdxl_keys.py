"""The keys of an SDXL single file in Stability's original (SGM) layout, as A1111 and ComfyUI read it.

`model.diffusion_model.*` is the UNet (LDM's names, plus `label_emb.0.{0,2}`: the size/crop and pooled-text
embedding), `first_stage_model.*` the VAE (LDM's names), `conditioner.embedders.0.transformer.text_model.*`
CLIP ViT-L in transformers' layout and `conditioner.embedders.1.model.*` OpenCLIP ViT-bigG with its
`text_projection`. Two empty marker tensors, read by ComfyUI and reForge, say how a model was trained:
`v_pred` (it predicts v, e.g. NoobAI-XL v-pred) and, with it, `ztsnr` (zero terminal SNR schedule).
"""

from __future__ import annotations

import torch

from inference.models import ldm_keys, open_clip_keys

CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
BIG_G_PREFIX = "conditioner.embedders.1.model."
V_PRED_MARKER = "v_pred"
ZTSNR_MARKER = "ztsnr"

State = dict[str, torch.Tensor]


def is_sdxl(state: State) -> bool:
    """Whether `state` is an SDXL base checkpoint: a UNet and SGM's second (OpenCLIP bigG) text encoder."""
    has_unet = any(key.startswith(ldm_keys.UNET_PREFIX) for key in state)
    return has_unet and any(key.startswith(BIG_G_PREFIX) for key in state)


def clip_l_state(state: State) -> State:
    """CLIP ViT-L weights with bare keys (`embeddings.*`, `encoder.layers.*`, `final_layer_norm.*`)."""
    out: State = {}
    for key, value in state.items():
        if not key.startswith(CLIP_L_PREFIX):
            continue
        bare = key[len(CLIP_L_PREFIX) :].removeprefix("text_model.")
        if bare != "embeddings.position_ids":  # a buffer, rebuilt by the model
            out[bare] = value
    return out


def big_g_state(state: State) -> State:
    """OpenCLIP bigG as CLIPTextModelWithProjection weights (bare keys): every block is kept (SDXL reads the
    penultimate hidden state itself) and `text_projection` becomes the projection's Linear weight."""
    return open_clip_keys.text_state(state, left_out=0, prefix=BIG_G_PREFIX, projection=True)


def pooled_width(state: State) -> int | None:
    """The width of bigG's projected (pooled) output: 1280 for SDXL; None without a `text_projection`."""
    projection = state.get(BIG_G_PREFIX + "text_projection")
    return None if projection is None else int(projection.shape[1])


def prediction_markers(state: State) -> tuple[bool, bool]:
    """(predicts v, zero terminal SNR) from the marker keys `v_pred` / `ztsnr` (ztsnr counts only with v)."""
    v_pred = V_PRED_MARKER in state
    return v_pred, v_pred and ZTSNR_MARKER in state
