"""The ControlNet extension's X/Y/Z axes in `python -m inference.xyz` (in process, on the tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose as compose_config
from hydra import initialize_config_dir
from PIL import Image

from inference.infotext import parse_infotext
from inference.xyz.axes import find_axis
from inference.xyz.cell import XYZError
from inference.xyz.cli import load_xyz_config, quote_overrides, run_xyz
from tests.test_controlnet_cli import files  # noqa: F401 (the ControlNet file and image fixture)

REPO = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "steps=3", "sampler=Euler", "prompt=a red circle", "seed=4", "draw_legend=false"]


def compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        return compose_config("xyz", overrides=quote_overrides(list(overrides)))


def test_weight_and_mode_axes_change_every_unit(files, tmp_path):  # noqa: F811
    model, image = files
    units = f"controlnet=[{{model: '{model}', image: '{image}', module: canny}}]"
    config = load_xyz_config(
        compose(*FAST, units, "x_type=controlnet_weight", "x_values=0,1", "y_type=controlnet_mode",
                "y_values=Balanced,ControlNet is more important", f"out_dir={tmp_path / 'plot'}")
    )  # fmt: skip
    result = run_xyz(config)
    pixels = [np.asarray(Image.open(cell.path), dtype=float) for cell in result.cells]
    fields = [parse_infotext(cell.infotext) for cell in result.cells]
    assert [f["ControlNet 0"].split(", ")[2] for f in fields] == ["Weight: 0.0", "Weight: 1.0"] * 2
    assert fields[3]["ControlNet 0"].endswith("Control Mode: ControlNet is more important")
    # Weight 0 adds nothing, whatever the mode; weight 1 changes the picture, and the modes differ.
    assert np.array_equal(pixels[0], pixels[2])
    assert np.abs(pixels[1] - pixels[0]).max() > 10 and np.abs(pixels[3] - pixels[1]).max() > 1
    assert result.axes[0].axis.label_for(0.5) == "[ControlNet] Weight: 0.5"
    assert find_axis("[ControlNet] Control Mode").key == "controlnet_mode"  # the extension's labels work too


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["x_type=controlnet_start", "x_values=0.2"], "changes ControlNet units: give controlnet="),
        (
            ["x_type=controlnet_weight", "x_values=0,3", "UNITS"],
            r"\[ControlNet\] Weight: 3.0 is not within 0 and 2",
        ),
        (["x_type=controlnet_mode", "x_values=Guess", "UNITS"], "'Guess' is not Balanced or My prompt"),
    ],
)
def test_axis_values_are_checked_before_rendering(files, tmp_path, overrides, message):  # noqa: F811
    model, image = files
    units = f"controlnet=[{{model: '{model}', image: '{image}'}}]"
    overrides = [units if item == "UNITS" else item for item in overrides]
    config = load_xyz_config(compose(*FAST, *overrides, f"out_dir={tmp_path / 'plot'}"))
    with pytest.raises(XYZError, match=message):
        run_xyz(config)
    assert not (tmp_path / "plot").exists()


def test_units_control_img2img_cells(files, tmp_path):  # noqa: F811
    model, image = files
    units = f"controlnet=[{{model: '{model}', image: '{image}'}}]"
    config = load_xyz_config(
        compose(*FAST, units, f"init_image={image}", "denoising_strength=0.6", "x_type=controlnet_weight",
                "x_values=0,1", f"out_dir={tmp_path / 'plot'}")
    )  # fmt: skip
    result = run_xyz(config)
    pixels = [np.asarray(Image.open(cell.path), dtype=float) for cell in result.cells]
    assert all("Denoising strength" in parse_infotext(cell.infotext) for cell in result.cells)
    assert np.abs(pixels[1] - pixels[0]).max() > 5
