"""`python -m inference.xyz` end to end on the tiny model: the files, each cell's infotext, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from inference.infotext import parse_infotext, read_infotext
from tests.test_inference_cli import write_trained_lora

REPO = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "steps=2", "sampler=Euler", "prompt=a red circle on blue"]


def run_xyz(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "inference.xyz", *FAST, *overrides, f"out_dir={out}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)


def test_plot_writes_cells_with_infotext_a_grid_per_z_and_the_grid_of_grids(tmp_path):
    lora = write_trained_lora(tmp_path / "style.safetensors", seed=1)
    out = tmp_path / "plot"
    result = run_xyz(
        out, "x_type=seed", "x_values=1-3", "y_type=Prompt S/R", 'y_values=red,"green, small"',
        "z_type=lora_weight", "z_values=0, 1", f"loras=[{lora}]", "batch_size=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "X/Y/Z plot: 12 images on 2 grids of 3 x 2" in result.stdout
    assert f"grid: {out / 'xyz_grid.png'}" in result.stdout
    assert sorted(path.name for path in out.glob("*.png")) == ["grid-z0.png", "grid-z1.png", "xyz_grid.png"]
    cells = sorted((out / "cells").glob("*.png"))
    assert len(cells) == 12
    for index, path in enumerate(cells):
        ix, iy, iz = index % 3, index // 3 % 2, index // 6
        info = parse_infotext(read_infotext(path))
        assert path.name == f"{index:05d}-{ix + 1}.png" and info["Seed"] == str(ix + 1)
        colour = ["red", "green, small"][iy]
        assert info["Prompt"] == f"a {colour} circle on blue <lora:style:{iz}>"
        assert info["Steps"] == "2" and info["Lora hashes"].startswith("style: ")
    grid = Image.open(out / "grid-z0.png")
    assert grid.width > 3 * 64 and grid.height > 2 * 64  # labelled: bands beside and above the cells
    main = parse_infotext(read_infotext(out / "xyz_grid.png"))
    assert (main["X Type"], main["Y Type"], main["Z Type"]) == ("Seed", "Prompt S/R", "LoRA weight")
    assert main["Z Values"] == "0, 1"


def _run_in_process(*overrides: str) -> None:
    """The entry point's run, on the config Hydra composes from these overrides (no new process)."""
    from hydra import compose, initialize_config_dir

    from data.errors import run_reporting_user_errors
    from inference.xyz.__main__ import run

    with initialize_config_dir(str(REPO / "configs" / "inference"), version_base="1.3"):
        cfg = compose("xyz", overrides=[*FAST, *overrides])
    run_reporting_user_errors(run, cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["x_type=seeds"], "error: unknown axis 'seeds'; use one of nothing, seed,"),
        (["x_type=steps", "x_values='1-3, 4.5'"], "error: X values for Steps: '4.5' is not a whole number"),
        (
            ["y_type=checkpoint", "y_values=no/such-000001.safetensors"],
            "error: Checkpoint name: no/such-000001",
        ),
        (["z_type=lora_weight", "z_values='0,1'"], "error: a LoRA weight axis needs a LoRA"),
        (  # A1111's img_max_size_mp: 100000 cells of 64x64 px rendered on for days before
            ["x_type=steps", "x_values='1-100000'"],
            "error: the grid would be 410 megapixels (100000 cells of 64x64), more than max_grid_megapixels=200",
        ),
    ],
)
def test_bad_axes_values_and_missing_files_are_one_line_errors(overrides, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_in_process(*overrides, f"out_dir={tmp_path}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert not (tmp_path / "xyz_grid.png").exists()


@pytest.mark.parametrize(
    "text", ['"red, large",blue', "0,0.5,1", "1-10 (+3)", "0.0-1.0 [5]", "-1", "it's, [a|b]"]
)
def test_value_lists_reach_the_parser_as_typed(text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from inference.xyz.cli import quote_overrides

    (override,) = quote_overrides([f"x_values={text}"])
    assert OverridesParser.create().parse_override(override).value() == text
