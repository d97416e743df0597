"""`python -m inference` with `controlnet:` units on the tiny model: the run applies them, writes the
extension's infotext entries, and refuses bad units in one line before the model loads; the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose as compose_config
from hydra import initialize_config_dir
from PIL import Image
from safetensors.torch import save_file

from data.typed_config import ConfigError
from inference.cli import load_render_config, render
from inference.controlnet import ActiveUnit, generate_controlled_batch
from inference.controlnet_hints import control_tensor
from inference.controlnet_models import legacy_model_hash
from inference.controlnet_render import generate_with_units
from inference.controlnet_units import ControlNetUnit, UnitError
from inference.infotext import parse_infotext, read_infotext
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams
from tests.controlnet_fixtures import tiny_controlnet
from tests.test_controlnet_loading import controlnet_to_ldm

REPO = Path(__file__).resolve().parents[1]
FAST = ["prompt=a red circle", "model=tiny", "steps=3", "width=64", "height=64", "seed=4", "sampler=Euler"]


def compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        return compose_config("txt2img", overrides=list(overrides))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("controlnet")
    model = folder / "control_tiny.safetensors"
    save_file(controlnet_to_ldm(tiny_controlnet(build_tiny(seed=0).unet, std=0.05)), model)
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    Image.fromarray(image).save(folder / "square.png")
    return model, folder / "square.png"


def _units(model: Path, image: Path, fields: str = ", module: canny") -> str:
    """The `controlnet=[...]` override for one unit; `fields`: more `key: value` pairs after image."""
    return f"controlnet=[{{model: '{model}', image: '{image}'{fields}}}]"


def test_a_unit_changes_the_render_and_is_written_as_the_extension_writes_it(files, tmp_path):
    model, image = files
    plain = render(load_render_config(compose(*FAST, f"out={tmp_path / 'plain'}")))
    config = load_render_config(compose(*FAST, f"out={tmp_path / 'cn'}", _units(model, image)))
    assert config.controlnet[0].module == "canny"
    controlled = render(config)
    ours, base = (np.asarray(Image.open(r.paths[0]), dtype=float) for r in (controlled, plain))
    assert np.abs(ours - base).max() > 10
    fields = parse_infotext(read_infotext(controlled.paths[0]))
    assert fields["ControlNet 0"] == (
        f"Module: canny, Model: control_tiny [{legacy_model_hash(model)}], Weight: 1.0, Resize Mode: Crop and "
        "Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )
    assert 'ControlNet 0: "Module: canny, ' in read_infotext(controlled.paths[0])


@pytest.mark.parametrize(
    "fields,message",
    [
        (", weight: 3", r"controlnet\[0\]: weight must be within 0 and 2"),
        (", guidance_start: 0.9, guidance_end: 0.1", r"controlnet\[0\]: guidance_start 0.9 is after"),
        (", module: depth_midas", "needs annotator model weights"),
        (", control_mode: Guess", "unknown control_mode 'Guess'"),
        (", hr_option: Guess", "unknown hr_option 'Guess'; use one of Both, Low res only, High res only"),
    ],
)
def test_bad_units_are_one_line_config_errors(files, fields, message):
    model, image = files
    with pytest.raises(ConfigError, match=message) as error:
        load_render_config(compose(*FAST, _units(model, image, fields)))
    assert "\n" not in str(error.value)


def test_missing_files_are_refused(files, tmp_path):
    model, image = files
    with pytest.raises(ConfigError, match="image .*nothing.png is not a file"):
        load_render_config(compose(*FAST, _units(model, tmp_path / "nothing.png")))
    bad_model = tmp_path / "vae.safetensors"
    save_file({"first_stage_model.x": torch.zeros(1)}, bad_model)
    config = load_render_config(compose(*FAST, _units(bad_model, image), f"out={tmp_path / 'out'}"))
    with pytest.raises(ConfigError, match=r"controlnet\[0\]: .*vae.safetensors holds no ControlNet weights"):
        render(config)


@pytest.mark.parametrize("mode", [["init_image={image}", "denoising_strength=0.6"], ["hires.enabled=true"]])
def test_units_control_img2img_and_the_hires_fix_runs(files, tmp_path, mode):
    model, image = files
    args = [*FAST, *(arg.format(image=image) for arg in mode)]
    plain = render(load_render_config(compose(*args, f"out={tmp_path / 'plain'}")))
    controlled = render(load_render_config(compose(*args, f"out={tmp_path / 'cn'}", _units(model, image))))
    ours, base = (np.asarray(Image.open(r.paths[0]), dtype=float) for r in (controlled, plain))
    assert ours.shape == base.shape and np.abs(ours - base).max() > 5
    assert read_infotext(controlled.paths[0]).count("ControlNet 0: ") == 1


def test_python_api_renders_units_with_a_controlnet_in_memory(files):
    model, image = files
    base = build_tiny(seed=0)
    controlnet = tiny_controlnet(base.unet, std=0.05)
    params = GenerationParams("a red circle", "", 4, 3, 5.0, 64, 64, sampler="Euler")
    unit = ControlNetUnit("training", str(image), "invert", weight=0.7)
    ours = generate_with_units(base, [params], [unit], controlnets={"training": controlnet})
    hint = control_tensor(255 - np.asarray(Image.open(image)))
    expected = generate_controlled_batch(base, [params], [ActiveUnit(controlnet, hint, weight=0.7)])
    assert np.array_equal(np.asarray(ours[0]), np.asarray(expected[0]))
    with pytest.raises(UnitError, match=r"controlnet\[0\]: model elsewhere is not a file"):
        generate_with_units(base, [params], [ControlNetUnit("elsewhere", str(image))])
