"""The X/Y/Z plot: grid geometry as A1111 lays it out, seeds as A1111 fixes them, cells on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import inference.xyz.render as xyz_render
from inference.hires import HiresParams
from inference.infotext import parse_infotext, read_infotext
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams, generate_batch
from inference.xyz import Cell, XYZError, read_axis, render_xyz
from inference.xyz.grids import grid_of_grids, z_grids
from inference.xyz.plan import plan_cells
from tests.test_inference_cli import write_trained_lora

W, H = 40, 32


def _colour(index: int) -> tuple[int, int, int]:
    return (index * 20 % 256, 255 - index * 20 % 256, index * 7 % 256)


def _cells(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (W, H), _colour(i)) for i in range(count)]


def _axes(x: str, y: str, z: str):
    return (
        read_axis("steps", x, "X"),
        read_axis("cfg", y, "Y") if y else read_axis("nothing", "", "Y"),
        (read_axis("sampler", z, "Z") if z else read_axis("nothing", "", "Z")),
    )


def test_cells_lie_x_across_y_down_one_grid_per_z():
    axes = _axes("1-3", "3,7", "Euler,DDIM")  # 3 x 2 x 2
    grids = z_grids(_cells(12), axes, legend=False)
    assert len(grids) == 2 and all(grid.size == (3 * W, 2 * H) for grid in grids)
    for iz, grid in enumerate(grids):
        for iy in range(2):
            for ix in range(3):
                centre = (ix * W + W // 2, iy * H + H // 2)
                assert grid.getpixel(centre) == _colour(ix + iy * 3 + iz * 6)  # A1111's cell index
    main = grid_of_grids(grids, axes[2], legend=False)
    assert main.size == (2 * 3 * W, 2 * H)
    assert main.getpixel((3 * W + W // 2, H // 2)) == _colour(6)  # the second Z grid starts at 3 cells


def test_legend_adds_a_label_band_left_and_on_top_around_the_same_cells():
    axes = _axes("1-3", "3,7", "Euler,DDIM")
    plain, labelled = z_grids(_cells(12), axes, False), z_grids(_cells(12), axes, True)
    pad_left, pad_top = labelled[0].width - 3 * W, labelled[0].height - 2 * H
    assert pad_left > 0 and pad_top > 0
    for bare, with_legend in zip(plain, labelled, strict=True):
        assert with_legend.size == (pad_left + 3 * W, pad_top + 2 * H)
        cropped = with_legend.crop((pad_left, pad_top, with_legend.width, with_legend.height))
        assert np.array_equal(np.asarray(cropped), np.asarray(bare))
        band = np.asarray(with_legend.crop((0, pad_top, pad_left, with_legend.height)))
        assert (band < 128).any()  # the Y labels are drawn
    main = grid_of_grids(labelled, axes[2], legend=True)
    z_band = main.height - labelled[0].height
    assert main.width == 2 * labelled[0].width and z_band > 0
    assert (np.asarray(main.crop((0, 0, main.width, z_band))) < 128).any()  # the Z labels


def test_an_axis_of_nothing_draws_no_band():
    axes = _axes("1-3", "", "")
    (grid,) = z_grids(_cells(3), axes, legend=True)
    assert grid.width == 3 * W and grid.height > H  # X labels on top, no Y labels
    assert grid_of_grids([grid], axes[2], legend=True).size == grid.size


def _settings(**changes) -> Cell:
    params = GenerationParams("a red circle", seed=5, steps=2, width=64, height=64, sampler="Euler")
    return Cell(params, **changes)


def test_minus_one_seeds_are_drawn_once_per_value_and_the_base_seed_once_per_plot():
    x, y, z = read_axis("seed", "-1, 7, -1"), read_axis("cfg", "3,7"), read_axis("nothing", "")
    cells, (fixed_x, _, _) = plan_cells(_settings(), x, y, z)
    seeds = [cell.params.seed for cell in cells]
    assert seeds[:3] == seeds[3:] and seeds[1] == 7 and -1 not in seeds and seeds[0] != seeds[2]
    assert fixed_x.values == seeds[:3]  # what "Fixed X Values" records
    base = _settings()
    base.params.seed = -1
    cells, _ = plan_cells(base, read_axis("cfg", "3,7,9"), y, z)
    assert len({cell.params.seed for cell in cells}) == 1 and cells[0].params.seed != -1
    kept, _ = plan_cells(base, read_axis("cfg", "3,7,9"), y, z, keep_random_seeds=True)
    assert {cell.params.seed for cell in kept} == {-1}  # drawn per cell when it renders


def test_prompt_sr_replaces_the_first_value_in_both_prompts():
    settings = _settings()
    settings.params.negative_prompt = "red square"
    axis = read_axis("Prompt S/R", "red,blue,green")
    cells, _ = plan_cells(settings, axis, read_axis("nothing", ""), read_axis("nothing", ""))
    assert [(c.params.prompt, c.params.negative_prompt) for c in cells] == [
        ("a red circle", "red square"), ("a blue circle", "blue square"), ("a green circle", "green square"),
    ]  # fmt: skip
    assert axis.labels == ["red", "blue", "green"]  # A1111 shows S/R values bare
    with pytest.raises(XYZError, match="Prompt S/R"):
        plan_cells(settings, read_axis("prompt_sr", "pink,blue"), axis, axis)


@pytest.fixture(scope="module")
def model():
    bundle = build_tiny(seed=0)
    bundle.freeze()
    return bundle


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xyz_loras")
    return [write_trained_lora(folder / f"{name}.safetensors", seed) for seed, name in enumerate("ab", 1)]


def test_networks_x_weights_patch_once_per_pair_and_weight_zero_is_the_base(
    model, loras, tmp_path, monkeypatch
):
    patches = []
    original = xyz_render.applied_lora

    def counting(model, lora, te, unet):
        patches.append((lora.name, te))
        return original(model, lora, te, unet)

    monkeypatch.setattr(xyz_render, "applied_lora", counting)
    axes = (
        read_axis("seed", "1-2", "X"),
        read_axis("lora_weight", "0, 1", "Y"),
        read_axis("network", ",".join(map(str, loras)), "Z"),
    )
    result = render_xyz(model, _settings(), axes, tmp_path, batch_size=4)
    assert sorted(patches) == [("a", 0.0), ("a", 1.0), ("b", 0.0), ("b", 1.0)]  # 4 patches for 8 cells
    assert len(result.cells) == 8 and len(result.sub_grid_paths) == 2 and result.grid_path.is_file()
    pixels = {(c.ix, c.iy, c.iz): np.asarray(Image.open(c.path)) for c in result.cells}
    plain = [np.asarray(image) for image in generate_batch(model, [result.cell(ix).params for ix in (0, 1)])]
    for ix in (0, 1):
        assert np.array_equal(pixels[ix, 0, 0], plain[ix]) and np.array_equal(pixels[ix, 0, 1], plain[ix])
        assert not np.array_equal(pixels[ix, 1, 0], plain[ix])
        assert not np.array_equal(pixels[ix, 1, 0], pixels[ix, 1, 1])
    info = parse_infotext(read_infotext(result.cell(1, 1, 1).path))
    assert (
        info["Prompt"] == "a red circle <lora:b:1>" and info["Seed"] == "2" and "b: " in info["Lora hashes"]
    )
    grid_info = parse_infotext(read_infotext(result.grid_path))
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["Fixed X Values"] == "1, 2"
    assert grid_info["Z Type"] == "Network" and "Z Type" not in parse_infotext(
        read_infotext(result.sub_grid_paths[0])
    )


def test_epoch_files_on_a_checkpoint_axis_are_patched_in_and_labelled_by_name(model, loras, tmp_path):
    axes = (
        read_axis("checkpoint", ",".join(map(str, loras))),
        read_axis("nothing", ""),
        read_axis("nothing", ""),
    )
    result = render_xyz(model, _settings(), axes, tmp_path)
    assert result.axes[0].labels == ["a.safetensors", "b.safetensors"]
    prompts = [parse_infotext(cell.infotext)["Prompt"] for cell in result.cells]
    assert prompts == ["a red circle <lora:a:1>", "a red circle <lora:b:1>"]


def test_keep_random_seeds_draws_a_seed_per_cell(model, tmp_path):
    settings = _settings()
    settings.params.seed = -1
    axes = (read_axis("cfg", "3,5,7"), read_axis("nothing", ""), read_axis("nothing", ""))
    result = render_xyz(model, settings, axes, tmp_path, keep_random_seeds=True)
    seeds = [int(parse_infotext(cell.infotext)["Seed"]) for cell in result.cells]
    assert len(set(seeds)) == 3 and -1 not in seeds


def test_var_seed_axis_writes_each_cells_variation_seed(model, tmp_path):
    settings = _settings()
    settings.params.subseed_strength = 0.5
    axes = (read_axis("var_seed", "10,11"), read_axis("nothing", ""), read_axis("nothing", ""))
    result = render_xyz(model, settings, axes, tmp_path)
    infos = [parse_infotext(cell.infotext) for cell in result.cells]
    assert [info["Variation seed"] for info in infos] == ["10", "11"]
    first, second = (np.asarray(Image.open(cell.path)) for cell in result.cells)
    assert not np.array_equal(first, second)


def test_denoising_sets_the_hires_pass_and_a_model_checkpoint_loads_once(model, tmp_path):
    loads = []

    def load(name):
        loads.append(name)
        return model

    settings = _settings(hires=HiresParams(scale=1.5))
    axes = (read_axis("denoising", "0.3, 0.9"), read_axis("cfg", "3,7"), read_axis("checkpoint", "tiny"))
    result = render_xyz(model, settings, axes, tmp_path, load_checkpoint=load)
    assert loads == ["tiny"]  # one load for the four cells
    infos = [parse_infotext(cell.infotext) for cell in result.cells]
    assert [info["Denoising strength"] for info in infos] == ["0.3", "0.9", "0.3", "0.9"]
    assert {info["Model"] for info in infos} == {"tiny"}
    low, high = (np.asarray(Image.open(result.cell(ix).path)) for ix in (0, 1))
    assert low.shape == (96, 96, 3) and not np.array_equal(low, high)
    with pytest.raises(XYZError, match="hires.enabled"):
        render_xyz(model, _settings(), (read_axis("hires_denoising", "0.5"), *axes[1:]), tmp_path)
