"""Build a model from its config and fill it with a converted state dict, with errors that say what differs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig

from inference.models import ldm_keys
from inference.models.errors import ModelLoadError

M = TypeVar("M", bound=torch.nn.Module)


def build_with_weights(
    factory: Callable[[], M], state: dict[str, torch.Tensor], what: str, path: Path, hint: str
) -> M:
    """`factory()` built without random init, holding exactly the tensors of `state` (as float32).

    `what` names the part (e.g. "UNet") and `hint` says how to fix a mismatch; both go into the error.
    """
    with init_empty_weights(include_buffers=False):  # weights come from `state`; skip the random init
        model = factory()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ModelLoadError(_mismatch(what, path, missing, unexpected, hint))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:  # shapes that differ from the config
        detail = str(error).strip().splitlines()[1:3]
        raise ModelLoadError(
            f"the {what} weights in {path} do not fit its architecture: {' '.join(detail)}. {hint}"
        ) from error
    return model.eval()


def _mismatch(what: str, path: Path, missing: list[str], unexpected: list[str], hint: str) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return f"the {what} weights in {path} do not match its architecture: {'; '.join(parts)}. {hint}"


def build_unet_and_vae(
    state: dict[str, torch.Tensor], unet_config: dict, vae_config: dict, path: Path, hint: str
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """The UNet and VAE of an LDM/SGM single file from their diffusers configs (keys converted here)."""
    unet = build_with_weights(
        lambda: UNet2DConditionModel.from_config(unet_config), ldm_keys.unet_state(state, unet_config), "UNet",
        path, hint,
    )  # fmt: skip
    vae = build_with_weights(
        lambda: AutoencoderKL.from_config(vae_config),
        ldm_keys.vae_state(state, vae_config),
        "VAE",
        path,
        hint,
    )
    return unet, vae


def build_text_model(
    cls: type, config: CLIPTextConfig, weights: dict, what: str, path: Path, hint: str
) -> Any:
    """`cls(config)` holding `weights` (bare keys; nested under `text_model.` where `cls` nests them)."""
    if nests_text_model(cls):
        weights = {
            key if key.startswith("text_projection.") else f"text_model.{key}": value
            for key, value in weights.items()
        }
    return build_with_weights(lambda: cls(config), weights, what, path, hint)


@functools.cache
def nests_text_model(cls: type) -> bool:
    """Whether transformers puts `cls`'s transformer under `text_model.` (it differs by class and version)."""
    small = CLIPTextConfig(
        vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    with torch.device("meta"):
        return hasattr(cls(small), "text_model")
