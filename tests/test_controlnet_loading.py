"""ControlNet loading: single files in the original `control_model.*` layout (.safetensors and .pth) and in
diffusers' layout, diffusers folders, and one-line refusals; the extension's "name [hash]" label."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from inference.controlnet_models import display_name, legacy_model_hash, load_controlnet
from inference.models.ldm_export import _unet_key
from inference.models.tiny import build_tiny
from tests.controlnet_fixtures import tiny_controlnet


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """An independent writer of the original layout (cldm.py's ControlNet): the UNet's encoder half under
    its LDM names, zero_convs.i.0, middle_block_out.0 and input_hint_block.{0, 2, ..., 14}."""
    per = controlnet.config.layers_per_block + 1
    blocks = len(controlnet.controlnet_cond_embedding.blocks)
    out = {}
    for key, value in controlnet.state_dict().items():
        if key.startswith("controlnet_down_blocks."):
            _, index, kind = key.split(".")
            name = f"zero_convs.{index}.0.{kind}"
        elif key.startswith("controlnet_mid_block."):
            name = f"middle_block_out.0.{key.split('.')[-1]}"
        elif key.startswith("controlnet_cond_embedding."):
            part = key.split(".")
            slot = (
                0
                if part[1] == "conv_in"
                else 2 * (blocks + 1)
                if part[1] == "conv_out"
                else 2 * (int(part[2]) + 1)
            )
            name = f"input_hint_block.{slot}.{part[-1]}"
        else:
            name = _unet_key(key, per, [])
        out[f"control_model.{name}"] = value.detach().clone().contiguous()
    return out


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def controlnet(model):
    return tiny_controlnet(model.unet)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ldm_single_files_convert_offline_to_the_same_weights(model, controlnet, tmp_path):
    state = controlnet_to_ldm(controlnet)
    save_file(state, tmp_path / "control_tiny.safetensors")
    torch.save({"state_dict": state}, tmp_path / "control_tiny.pth")
    assert _same(load_controlnet(str(tmp_path / "control_tiny.safetensors"), model.unet), controlnet)
    assert _same(load_controlnet(str(tmp_path / "control_tiny.pth"), model.unet), controlnet)
    # ControlNet 1.1 files keep the same names without the control_model. prefix.
    save_file({k.removeprefix("control_model."): v for k, v in state.items()}, tmp_path / "v11.safetensors")
    assert _same(load_controlnet(str(tmp_path / "v11.safetensors"), model.unet), controlnet)


def test_diffusers_files_and_folders_load(model, controlnet, tmp_path):
    save_file(controlnet.state_dict(), tmp_path / "diffusers_layout.safetensors")
    assert _same(load_controlnet(str(tmp_path / "diffusers_layout.safetensors"), model.unet), controlnet)
    controlnet.save_pretrained(tmp_path / "folder")
    assert _same(load_controlnet(str(tmp_path / "folder"), model.unet), controlnet)


def test_bad_controlnet_sources_are_one_line(model, controlnet, tmp_path):
    save_file({"first_stage_model.x": torch.zeros(1)}, tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match="holds no ControlNet weights"):
        load_controlnet(str(tmp_path / "vae.safetensors"), model.unet)
    state = controlnet_to_ldm(controlnet)
    state.pop("control_model.zero_convs.0.0.weight")
    save_file(state, tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="is not a ControlNet for this base model"):
        load_controlnet(str(tmp_path / "cut.safetensors"), model.unet)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a ControlNet file"):
        load_controlnet(str(tmp_path / "notes.txt"), model.unet)
    with pytest.raises(ValueError, match="not a diffusers ControlNet folder or reachable hub id"):
        load_controlnet(str(tmp_path), model.unet)


def test_display_name_is_name_and_a1111s_old_hash(tmp_path):
    path = tmp_path / "control_v11p_sd15_canny.safetensors"
    data = bytes(range(256)) * 5000  # past 1 MiB + 64 KiB
    path.write_bytes(data)
    expected = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    assert legacy_model_hash(path) == expected
    assert display_name(str(path)) == f"control_v11p_sd15_canny [{expected}]"
