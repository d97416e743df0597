"""Load a single-file Stable Diffusion checkpoint in the original (CompVis/LDM) layout, as A1111 does.

The file (`.safetensors`, or a `.ckpt` read weights-only) gives the weights; the architecture comes from
a sidecar `<checkpoint>.yaml` (LDM original config) or, without one, from the family the weights show:
SD 1.5's, or SD 2's 512 epsilon model for an OpenCLIP text encoder (SD 2.x). A single file has no
tokenizer: it comes from `tokenizer` (a folder or hub id; default CLIP ViT-L/14's from the hub cache),
made to pad as OpenCLIP does for SD 2.x (`open_clip_keys`). An SDXL file (SGM layout) goes to
`sdxl_single_file`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import CLIPTextModel

from inference.models import ldm_config, ldm_keys, open_clip_keys, sdxl_keys
from inference.models.bundle import ModelBundle
from inference.models.checkpoint_file import read_state_dict
from inference.models.errors import ModelLoadError
from inference.models.sdxl_single_file import load_sdxl_single_file
from inference.models.state_load import build_text_model, build_unet_and_vae
from inference.models.tokenizer_source import load_tokenizer

log = logging.getLogger(__name__)

BUILT_IN_ARCHITECTURE = {
    "sd1": "the SD 1.5 architecture (no sidecar .yaml)",
    "sd2": "the SD 2.x 512 epsilon architecture, v2-inference.yaml (no sidecar .yaml)",
}
VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2"}  # ModelBundle.base_model_version (kohya's ss_base_model_version)


def load_single_file(
    path: str | Path, tokenizer: str | None = None, original_config: str | Path | None = None
) -> ModelBundle:
    """The SD 1.x, 2.x or SDXL model in checkpoint `path`; `original_config` overrides the sidecar `.yaml`."""
    path = Path(path).expanduser()
    state = read_state_dict(path)
    if sdxl_keys.is_sdxl(state):
        return load_sdxl_single_file(path, state, tokenizer, original_config)
    family = ldm_keys.model_family(state, path)
    config_path = Path(original_config).expanduser() if original_config else ldm_config.sidecar_yaml(path)
    if config_path:
        original = ldm_config.read_original_config(config_path)
    else:
        original = ldm_config.default_original_config(family)
        # Without a config, A1111 knows an inpainting model (SD 1.5 / 2 inpainting) by its 9-channel input.
        channels = ldm_keys.unet_input_channels(state)
        if channels is not None:
            original["model"]["params"]["unet_config"]["params"]["in_channels"] = channels
        if family == "sd2":
            _say_epsilon_was_assumed(path)
    where = str(config_path) if config_path else BUILT_IN_ARCHITECTURE[family]
    hint = (
        f"The architecture came from {where}; put the checkpoint's original config next to it as "
        f"{path.with_suffix('.yaml').name} if it is not a standard SD 1.x / 2.x model."
    )
    tok = load_tokenizer(tokenizer or ldm_config.default_tokenizer(original))
    if family == "sd2":
        tok = open_clip_keys.open_clip_tokenizer(tok)
    unet_cfg, vae_cfg = _diffusers_configs(original, where)
    unet, vae = build_unet_and_vae(state, unet_cfg, vae_cfg, path, hint)
    text_encoder = _text_encoder(state, original, tok, path, hint, family)
    scheduler = ldm_config.noise_scheduler(original)
    return ModelBundle(unet, vae, text_encoder, tok, scheduler, str(path), VERSIONS[family])


def _say_epsilon_was_assumed(path: Path) -> None:
    log.info(
        "%s is SD 2.x (OpenCLIP text encoder) and has no sidecar .yaml: loading it as the 512 epsilon "
        "model (v2-inference.yaml); the weights cannot tell a 768-v model. For a v model put "
        "v2-inference-v.yaml next to it as %s, or train with model.v_parameterization=true.",
        path,
        path.with_suffix(".yaml").name,
    )


def _diffusers_configs(original: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return ldm_config.unet_config(original), ldm_config.vae_config(original)
    except (KeyError, TypeError) as error:
        raise ModelLoadError(
            f"the model config {where} lacks a needed value ({error}); compare it with SD 1.5's "
            "v1-inference.yaml (unet_config.params, first_stage_config.params.ddconfig)."
        ) from error


def _text_encoder(
    state: dict[str, Any], original: dict[str, Any], tokenizer: Any, path: Path, hint: str, family: str
) -> CLIPTextModel:
    overrides = ldm_config.text_encoder_overrides(original)
    if family == "sd2":
        left_out = open_clip_keys.layers_left_out(ldm_config.text_layer(original))
        weights = open_clip_keys.text_state(state, left_out)
        overrides = open_clip_keys.text_overrides(overrides)
    else:
        weights = ldm_keys.clip_state(state)
    config = ldm_keys.clip_config(weights, overrides, tokenizer, path)
    return build_text_model(CLIPTextModel, config, weights, "text encoder", path, hint)
