"""Replace a model's VAE, as A1111's `models/VAE` setting does: from a single file or a diffusers folder.

A VAE file (`.safetensors`, or `.pt`/`.ckpt` read weights-only) holds LDM keys (`encoder.conv_in.weight`,
sometimes under `first_stage_model.`) or diffusers keys; it gets the architecture of the VAE it replaces.
A diffusers folder (`config.json` + weights, or a model folder with `vae/`) brings its own config; a
config without `scaling_factor` keeps the replaced VAE's (SDXL's 0.13025 for the SDXL fp16-fix VAE), where
diffusers would fill in SD 1's 0.18215.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from diffusers import AutoencoderKL

from inference.models.bundle import ModelBundle
from inference.models.checkpoint_file import read_state_dict
from inference.models.errors import ModelLoadError
from inference.models.ldm_keys import vae_state
from inference.models.state_load import build_with_weights


def load_vae(source: str | Path, like: AutoencoderKL) -> AutoencoderKL:
    """The VAE at `source` (file or diffusers folder); a file takes the config of `like`."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path, like)
    # diffusers' `_use_default_values` would reset values set after construction (SDXL's scaling factor).
    config = {key: value for key, value in like.config.items() if key != "_use_default_values"}
    state = vae_state(read_state_dict(path), config)
    if not state:
        raise ModelLoadError(
            f"{path} holds no VAE weights (no `encoder.*`/`decoder.*` keys, with or without "
            "`first_stage_model.`). Give a VAE file such as vae-ft-mse-840000-ema-pruned.safetensors."
        )
    hint = "Give a VAE made for this model's architecture (SD 1.x VAEs have 4 latent channels)."
    return build_with_weights(lambda: AutoencoderKL.from_config(config), state, "VAE", path, hint)


def _from_folder(folder: Path, like: AutoencoderKL) -> AutoencoderKL:
    subfolder = "vae" if (folder / "vae" / "config.json").is_file() else None
    if subfolder is None and not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers VAE folder: it has neither config.json nor vae/config.json. "
            "Give the VAE folder, a model folder with vae/, or a VAE .safetensors file."
        )
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), subfolder=subfolder)
        config = json.loads((folder / (subfolder or "") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"cannot load the VAE folder {folder}: {first_line}") from error
    if "scaling_factor" not in config:
        vae.register_to_config(scaling_factor=like.config.scaling_factor)
    return vae


def with_vae(bundle: ModelBundle, source: str | Path) -> ModelBundle:
    """`bundle` with its VAE replaced by the one at `source`, in the same mode (eval, no gradients)."""
    try:
        vae = load_vae(source, like=bundle.vae)
    except ModelLoadError as error:  # the loaders' messages speak of "the model": say which setting this is
        raise ModelLoadError(f"the VAE override (model.vae, or vae= when rendering): {error}") from error
    vae.requires_grad_(any(p.requires_grad for p in bundle.vae.parameters()))
    vae.train(bundle.vae.training)
    return dataclasses.replace(bundle, vae=vae)
