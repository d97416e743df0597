"""Training pictures for the toy ControlNet: base-world scenes, their latents, captions and silhouettes."""

from __future__ import annotations

import numpy as np
import torch

from data.toy.caption_variants import caption_variants, tag_variant
from data.toy.control import shapeless_caption, silhouette
from train.toy_base.controlnet_training import ControlPool
from train.toy_base.denoiser_training import encode_pool, tokenize
from train.toy_base.pictures import base_world_pool


def control_pool(model, count: int, seed: int, variants: int = 6, shapeless_variants: int = 3) -> ControlPool:
    """`count` base-world pictures drawn from `seed`, encoded by `model.vae`, with captions and silhouettes."""
    pictures, scenes = base_world_pool(count, seed)
    rng = np.random.default_rng([seed, 31])
    captions = [caption_variants(scene, rng, variants) for scene in scenes]
    shapeless = [
        shapeless_caption(tag_variant(scene, rng), scene)
        for scene in scenes
        for _ in range(shapeless_variants)
    ]
    latents = encode_pool(model.vae, model.tokenizer, pictures, captions)
    shapeless_ids = torch.cat(
        [tokenize(model.tokenizer, shapeless[i : i + 4096]) for i in range(0, len(shapeless), 4096)]
    )
    masks = np.stack([np.asarray(silhouette(scene).convert("L"), dtype=np.uint8) for scene in scenes])
    return ControlPool(
        latents, torch.from_numpy(masks)[:, None], shapeless_ids.view(count, shapeless_variants, -1)
    )
