"""Upscaler files (ESRGAN RRDBNet in both key layouts, Real-ESRGAN compact): loading by name, tiling, A1111's
pass-and-resize rule, the hires fix with a file by name, and the Extras command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import save_file

from data.typed_config import ConfigError
from inference.esrgan import RRDBNet, SRVGGNetCompact
from inference.extras.cli import load_extras_config, run_extras
from inference.hires import HiresParams, generate_hires_batch
from inference.infotext import hires_fields, parse_infotext, read_infotext
from inference.model_upscale import ModelUpscaler, find_model_upscaler, upscale_by, upscale_with_network
from inference.models.loading import load_base_model
from inference.txt2img import GenerationParams
from inference.upscaler_files import load_upscaler_network
from train.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TINY = dict(features=8, blocks=1, growth=4)  # the real architecture, small enough for fast tests


def random_rrdbnet(scale: int = 4, seed: int = 0) -> RRDBNet:
    """A random-weight RRDBNet of `scale` as its files describe it (x2 / x1 unshuffle, x8 three steps)."""
    torch.manual_seed(seed)
    upsamples, unshuffle = {1: (2, 4), 2: (2, 2), 4: (2, 1), 8: (3, 1)}[scale]
    network = RRDBNet(**TINY, upsamples=upsamples, unshuffle=unshuffle).eval()
    # Weights 1.5x the default init: outputs spread over ~25 levels of 255 (the default gives ~3), and
    # a 0.5 bias keeps nearly all of them inside [0, 1], so tiling differences are not clipped away.
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(1.5)
        network.conv_last.bias.fill_(0.5)
    return network


def old_layout(network: RRDBNet) -> dict[str, torch.Tensor]:
    """The original ESRGAN keys: model.0, model.1.sub.N.RDBk.convj.0, model.1.sub.<nb>, then the x2 convs at
    3, 6, ..., the HR conv two after the last of them and the last conv two after that."""
    n = network.upsamples
    tops = {"conv_first": 0, "conv_hr": 3 * n + 2, "conv_last": 3 * n + 4}
    tops |= {f"conv_up{i}": 3 * i for i in range(1, n + 1)}
    state = {}
    for key, tensor in network.state_dict().items():
        parts = key.split(".")
        if parts[0] == "body":
            state[f"model.1.sub.{parts[1]}.RDB{parts[2][3:]}.{parts[3]}.0.{parts[4]}"] = tensor
        elif parts[0] == "conv_body":
            state[f"model.1.sub.{len(network.body)}.{parts[1]}"] = tensor
        else:
            state[f"model.{tops[parts[0]]}.{parts[1]}"] = tensor
    return state


def save(state: dict[str, torch.Tensor], path: Path, wrapper: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state} if wrapper else state, path)
    return path


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random picture (what a decoded first pass looks like, not white noise)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8))
    return small.resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize(
    ("scale", "layout", "suffix"),
    [
        (4, "old", ".pth"), (4, "old", ".safetensors"), (4, "params_ema", ".pth"), (4, "new", ".safetensors"),
        (8, "old", ".pth"), (2, "params", ".pth"), (1, "new", ".safetensors"), (2, "old", ".safetensors"),
    ],
)  # fmt: skip
def test_rrdbnet_files_load_by_name_in_both_layouts_and_formats(tmp_path, scale, layout, suffix):
    network = random_rrdbnet(scale)
    state = old_layout(network) if layout == "old" else network.state_dict()
    save(state, tmp_path / f"{scale}x-model{suffix}", None if layout in ("old", "new") else layout)
    upscaler = find_model_upscaler(f"{scale}x-model", tmp_path, 0, 0)
    assert upscaler is not None and upscaler.name == f"{scale}x-model"
    loaded = load_upscaler_network(upscaler.path)
    assert isinstance(loaded, RRDBNet) and loaded.scale == scale
    assert (len(loaded.body), loaded.conv_first.out_channels, loaded.body[0].rdb1.conv1.out_channels) == (
        1,
        8,
        4,
    )
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)
    assert loaded(x).shape == (1, 3, 12 * scale, 16 * scale)


def test_compact_files_load_and_detect_scale_and_depth(tmp_path):
    torch.manual_seed(1)
    network = SRVGGNetCompact(features=8, convs=3, scale=2).eval()
    save(network.state_dict(), tmp_path / "realesr-compact.pth", "params")
    loaded = load_upscaler_network(tmp_path / "realesr-compact.pth")
    assert isinstance(loaded, SRVGGNetCompact) and loaded.scale == 2 and len(loaded.body) == 2 * 3 + 3
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)


def test_a_file_of_unknown_keys_or_a_missing_name_is_one_clear_line(tmp_path):
    save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "swinir.safetensors")
    with pytest.raises(
        ConfigError, match=r"swinir.safetensors has keys of an unknown architecture; supported"
    ):
        find_model_upscaler("swinir", tmp_path, 192, 8)
    (tmp_path / "broken.pth").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="broken.pth cannot be read"):
        find_model_upscaler("broken", tmp_path, 192, 8)
    assert find_model_upscaler("absent", tmp_path, 192, 8) is None


def test_tiled_and_untiled_agree_within_tolerance():
    """Tolerance: mean difference under 0.5 of 255 levels, 99% of values within 3, none beyond 16.

    A tile does not see its neighbours' pixels, so every output pixel whose receptive field (about 20 input
    pixels for this RRDBNet) crosses a tile edge is computed from other inputs than in one pass; the linear
    blend over the overlap smooths the seams but cannot undo that. A picture smaller than one tile is padded
    with black at the top and left (A1111's split_grid places the tile flush with the far edges), which the
    network sees as black pixels rather than as its own zero padding: only that border differs."""
    network = random_rrdbnet(4)
    image = picture(64, 48)
    whole = np.asarray(upscale_with_network(network, image, tile=0, overlap=0)).astype(int)
    assert whole.std() > 10  # a picture, not a flat colour, comes out
    tiled = np.asarray(upscale_with_network(network, image, tile=32, overlap=8)).astype(int)
    assert whole.shape == tiled.shape == (192, 256, 3)
    difference = np.abs(whole - tiled)
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 3 and difference.max() <= 16
    assert difference.max() > 0  # 3 x 2 tiles of 32 on 64 x 48 did run apart
    padded = np.asarray(upscale_with_network(network, image, tile=192, overlap=8)).astype(int)
    assert np.array_equal(padded[100:, 100:], whole[100:, 100:]) and not np.array_equal(padded, whole)


def test_upscale_by_repeats_passes_then_resizes_to_multiples_of_8():
    image = picture(50, 30)
    calls = []

    def double(im: Image.Image) -> Image.Image:
        calls.append(im.size)
        return im.resize((im.width * 2, im.height * 2))

    assert upscale_by(image, 3.3, double).size == (160, 96)  # int(165)//8*8, int(99)//8*8
    assert calls == [(50, 30), (100, 60)]  # two x2 passes reach 200x120, then Lanczos down
    calls.clear()
    assert upscale_by(image, 100, double).size == (5000, 3000) and len(calls) == 3  # at most 3 passes
    assert upscale_by(image, 2, lambda im: im).size == (96, 56)  # a x1 model: one pass, then Lanczos


@pytest.fixture(scope="module")
def tiny():
    return load_base_model(ModelConfig(kind="tiny"))


def test_hires_with_an_upscaler_file_by_name(tiny, tmp_path):
    save(old_layout(random_rrdbnet(4)), tmp_path / "4x-tiny.pth")
    params = [GenerationParams(prompt="a red circle", seed=3, steps=2, width=64, height=48, sampler="Euler")]
    outputs = {}
    for tile in (0, 16):
        hires = HiresParams(
            "4x-tiny",
            scale=1.5,
            steps=2,
            model_upscaler=ModelUpscaler("4x-tiny", str(tmp_path / "4x-tiny.pth"), tile),
        )
        hires.validate()
        outputs[tile] = np.asarray(generate_hires_batch(tiny, params, hires)[0]).astype(int)
    assert outputs[0].shape == (72, 96, 3)
    assert hires_fields(params[0], hires)["Hires upscaler"] == "4x-tiny"
    # Tiling changes the upscaled picture a little (see above), so the second pass starts elsewhere.
    assert 0 < np.abs(outputs[0] - outputs[16]).mean() < 20
    lanczos = np.asarray(generate_hires_batch(tiny, params, HiresParams("Lanczos", scale=1.5, steps=2))[0])
    assert np.abs(outputs[0] - lanczos.astype(int)).mean() > 0  # the file, not Lanczos, upscaled
    with pytest.raises(ValueError, match="unknown hires upscaler"):
        HiresParams("4x-tiny", scale=1.5).validate()  # a name without its file


def render_config(*overrides: str):
    from inference.cli import load_render_config, quote_prompt_overrides

    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        cfg = compose("txt2img", overrides=quote_prompt_overrides(["prompt=a", *overrides]))
    return load_render_config(cfg)


def test_render_config_finds_the_file_in_upscaler_dir(tmp_path):
    save(random_rrdbnet(2).state_dict(), tmp_path / "2x-real.safetensors")
    config = render_config("hires.enabled=true", "hires.upscaler=2x-real", f"upscaler_dir={tmp_path}")
    assert config.upscaler_dir == str(tmp_path) and (config.upscaler_tile, config.upscaler_tile_overlap) == (
        192,
        8,
    )
    with pytest.raises(
        ConfigError, match=r"unknown hires upscaler '2x-other'.*upscaler files there: 2x-real"
    ):
        render_config("hires.enabled=true", "hires.upscaler=2x-other", f"upscaler_dir={tmp_path}")
    with pytest.raises(ConfigError, match="overlap smaller than the tile"):
        render_config(
            "hires.enabled=true", "hires.upscaler=2x-real", f"upscaler_dir={tmp_path}", "upscaler_tile=8"
        )


@pytest.mark.slow  # a python -m inference subprocess (about 19 s); the in-process hires test covers the logic
def test_cli_hires_upscaler_by_name_from_models_esrgan(tmp_path):
    """The acceptance line: a random-weight RRDBNet file in models/ESRGAN (the default upscaler_dir, relative
    to where the command runs) is a hires upscaler by its name."""
    save(old_layout(random_rrdbnet(4)), tmp_path / "models" / "ESRGAN" / "4x-random.pth")
    command = [
        sys.executable, "-m", "inference", "model=tiny", "steps=2", "width=64", "height=48", "seed=5",
        "sampler=Euler", "prompt=a red circle", "hires.enabled=true", "hires.scale=1.5", "hires.steps=2",
        "hires.upscaler=4x-random", "upscaler_tile=32", "out=images",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "images" / "00000-5.png"
    assert Image.open(path).size == (96, 72)
    info = parse_infotext(read_infotext(path))
    assert (info["Size"], info["Hires upscale"], info["Hires upscaler"]) == ("64x48", "1.5", "4x-random")


def extras(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        return load_extras_config(compose("extras", overrides=list(overrides)))


def test_extras_upscales_with_the_file_and_writes_a1111_infotext(tmp_path):
    save(random_rrdbnet(4).state_dict(), tmp_path / "esrgan" / "4x-new.pth", "params_ema")
    source = tmp_path / "source.png"
    picture(40, 28).save(source, pnginfo=_parameters("a red circle\nSteps: 2, Seed: 5"))
    settings = (f"image={source}", "upscaler=4x-new", "scale=2", f"upscaler_dir={tmp_path / 'esrgan'}")
    first = run_extras(extras(*settings, f"out={tmp_path / 'out'}", "upscaler_tile=0"))
    second = run_extras(extras(*settings, f"out={tmp_path / 'out'}", "upscaler_tile=16"))
    assert [p.name for p in first.paths + second.paths] == ["00000.png", "00001.png"]
    with Image.open(first.paths[0]) as written:
        assert written.size == (80, 56)  # int(40 * 2) // 8 * 8, int(28 * 2) // 8 * 8
        assert written.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: 4x-new"
        assert written.info["extras"] == written.info["postprocessing"]
        assert written.info["parameters"] == "a red circle\nSteps: 2, Seed: 5"  # the source's, kept
        untiled = np.asarray(written).astype(int)
    tiled = np.asarray(Image.open(second.paths[0])).astype(int)
    assert 0 < np.abs(untiled - tiled).mean() < 3.0
    network = load_upscaler_network(tmp_path / "esrgan" / "4x-new.pth")
    by_hand = upscale_with_network(network, Image.open(source).convert("RGB"), 0, 0)  # 160x112, then Lanczos
    np.testing.assert_array_equal(untiled, np.asarray(by_hand.resize((80, 56), Image.Resampling.LANCZOS)))
    lanczos = run_extras(extras(f"image={source}", "upscaler=Lanczos", "scale=1.5", f"out={tmp_path / 'l'}"))
    assert Image.open(lanczos.paths[0]).size == (56, 40)
    with pytest.raises(ConfigError, match="unknown upscaler 'missing'"):
        extras(*settings[:1], "upscaler=missing", f"upscaler_dir={tmp_path / 'esrgan'}")
    with pytest.raises(ConfigError, match="scale must be a number above 0"):
        extras(*settings[:2], "scale=0", f"upscaler_dir={tmp_path / 'esrgan'}")


def _parameters(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


def test_extras_command_upscales_a_folder_keeping_names(tmp_path, monkeypatch, capsys):
    """The command's run (as `python -m inference.extras` calls it, in this process to stay fast)."""
    from data.errors import run_reporting_user_errors
    from inference.extras.__main__ import quote_upscaler, run

    save(old_layout(random_rrdbnet(2)), tmp_path / "models" / "ESRGAN" / "2x-old.safetensors")
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        picture(24, 16).save(tmp_path / "in" / f"{name}.png")
    monkeypatch.chdir(tmp_path)  # upscaler_dir's default, models/ESRGAN, is relative to where it runs
    arguments = ["image=in", "upscaler=2x-old", "scale=2", "out=up"]
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        run_reporting_user_errors(run, compose("extras", overrides=quote_upscaler(arguments)))
        assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["a.png", "b.png"]
        assert Image.open(tmp_path / "up" / "a.png").size == (48, 32)
        assert "Postprocess upscaler: 2x-old" in Image.open(tmp_path / "up" / "b.png").info["postprocessing"]
        assert "Upscaled 2 pictures with 2x-old" in capsys.readouterr().out
        with pytest.raises(SystemExit) as exit_info:
            run_reporting_user_errors(
                run, compose("extras", overrides=quote_upscaler([*arguments[:1], "upscaler=no, such"]))
            )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown upscaler 'no, such': not one of Lanczos")


def test_xyz_config_takes_the_upscaler_file_too(tmp_path):
    from inference.xyz.cli import load_xyz_config, settings_cell

    save(random_rrdbnet(4).state_dict(), tmp_path / "4x-xyz.safetensors")
    overrides = ["prompt=a", "hires.enabled=true", "hires.upscaler=4x-xyz", f"upscaler_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        config = load_xyz_config(compose("xyz", overrides=[*overrides, "upscaler_tile=0"]))
        with pytest.raises(ConfigError, match="unknown hires upscaler '4x-xyz'"):
            load_xyz_config(compose("xyz", overrides=[*overrides[:3], "upscaler_dir=elsewhere"]))
    hires = settings_cell(config, None).hires
    assert hires is not None and hires.pixel_model() == ModelUpscaler(
        "4x-xyz", str(tmp_path / "4x-xyz.safetensors"), 0, 8
    )


def test_a_grey_model_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    grey = RRDBNet(1, 1, **TINY)
    save(grey.state_dict(), tmp_path / "1ch.pth")
    with pytest.raises(ConfigError, match="1ch.pth is not an RGB to RGB model"):
        find_model_upscaler("1ch", tmp_path, 192, 8)
