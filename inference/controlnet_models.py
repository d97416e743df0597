"""Loading a ControlNet: a diffusers folder, a hub id, or a single file as A1111's ControlNet extension keeps
them (models/ControlNet/*.safetensors | *.pth), in the original `control_model.*` layout or diffusers' own."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.configuration_utils import FrozenDict
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import load_file
from torch import Tensor

SINGLE_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
LDM_PREFIX = "control_model."


def legacy_model_hash(path: str | Path) -> str:
    """A1111's old 8-digit model hash (64 KiB at 1 MiB into the file), which the extension shows as
    "name [hash]"."""
    with open(path, "rb") as file:
        file.seek(0x100000)
        return hashlib.sha256(file.read(0x10000)).hexdigest()[:8]


def display_name(source: str) -> str:
    """The extension's model label: "name [hash]" for a file, the folder or hub id's last part otherwise."""
    path = Path(source)
    if path.is_file():
        return f"{path.stem} [{legacy_model_hash(path)}]"
    return path.name or source


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A .safetensors file, or a pickle read with weights_only=True (its `state_dict` entry when nested)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def _hint_channels(state: dict[str, Tensor]) -> tuple[int, tuple[int, ...]]:
    """(hint image channels, conditioning_embedding_out_channels) read from the LDM input_hint_block convs.

    The block is conv_in, then pairs (same width, stride-2 wider) and a zero conv: widths c0, c0, c1, c1, …
    """
    convs = sorted(
        (int(key.split(".")[1]), value)
        for key, value in state.items()
        if key.startswith("input_hint_block.") and key.endswith(".weight")
    )
    widths = [value.shape[0] for _, value in convs[:-1]]  # the last conv maps to the UNet's width
    return convs[0][1].shape[1], tuple(widths[0::2])


def _diffusers_hint_channels(state: dict[str, Tensor]) -> tuple[int, tuple[int, ...]]:
    blocks = sorted(
        (int(key.split(".")[2]), value)
        for key, value in state.items()
        if key.startswith("controlnet_cond_embedding.blocks.") and key.endswith(".weight")
    )
    conv_in = state["controlnet_cond_embedding.conv_in.weight"]
    return conv_in.shape[1], (conv_in.shape[0], *[value.shape[0] for _, value in blocks[1::2]])


def _with_in_channels(unet: torch.nn.Module, state: dict[str, Tensor]) -> Any:
    """Something shaped as `unet` for ControlNetModel.from_unet, with the ControlNet file's own input channels:
    an inpainting UNet takes 9, a ControlNet for its base model 4 (the extension feeds it the latents only)."""
    conv_in = state.get("conv_in.weight")
    channels = unet.config.in_channels if conv_in is None else conv_in.shape[1]
    return SimpleNamespace(config=FrozenDict({**unet.config, "in_channels": channels}))


def controlnet_from_single_file(path: Path, unet: torch.nn.Module) -> ControlNetModel:
    """A ControlNet file for the base model `unet` (its config gives the ControlNet's shape)."""
    state = read_state_dict(path)
    if any(key.startswith(LDM_PREFIX) for key in state):
        state = {key[len(LDM_PREFIX) :]: value for key, value in state.items() if key.startswith(LDM_PREFIX)}
    if "time_embedding.linear_1.weight" in state:
        channels, widths = _diffusers_hint_channels(state)
    elif "time_embed.0.weight" in state:
        channels, widths = _hint_channels(state)
        converted = convert_controlnet_checkpoint(state, dict(unet.config))
        state = {
            key: value for key, value in converted.items() if value is not None
        }  # None: absent in the file
    else:
        raise ValueError(f"{path} holds no ControlNet weights (neither control_model.* nor diffusers keys)")
    model = ControlNetModel.from_unet(
        _with_in_channels(unet, state),
        conditioning_embedding_out_channels=widths,
        load_weights_from_unet=False,
        conditioning_channels=channels,
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ValueError(f"{path} is not a ControlNet for this base model ({problem}): use one made for it")
    return model


def load_controlnet(source: str, unet: torch.nn.Module) -> ControlNetModel:
    """A frozen ControlNet on the UNet's device and dtype, from a folder, a hub id or a single file."""
    path = Path(source)
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ValueError(f"{source} is not a ControlNet file: use {', '.join(SINGLE_FILE_SUFFIXES)}")
        model = controlnet_from_single_file(path, unet)
    elif path.is_dir() or (source.count("/") == 1 and not source.startswith((".", "/"))):
        try:
            model = ControlNetModel.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{source} is not a diffusers ControlNet folder or reachable hub id ({error})"
            ) from None
    else:
        raise ValueError(f"{source} is not a file, a folder or a hub id: give the ControlNet's path")
    model.requires_grad_(False)
    return model.to(unet.device, next(unet.parameters()).dtype).eval()
