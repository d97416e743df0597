"""`python -m inference` end to end on the tiny model: files, seeds, infotext, LoRA tags, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose as compose_config
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image
from safetensors.torch import load_file, save_file

from data.typed_config import ConfigError
from inference.cli import load_model, load_render_config, next_image_number, quote_prompt_overrides
from inference.extra_networks import parse_prompt
from inference.infotext import parse_infotext, read_infotext
from inference.models.tiny import build_tiny
from inference.prompt_loras import LoraTagError, applied_loras, lora_hashes, resolve_loras
from train.config import NetworkConfig, TrainConfig
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "model=tiny",
    "steps=3",
    "width=64",
    "height=64",
    "cfg_scale=5",
    "sampler=DPM++ 2M",
    "scheduler=Karras",
]


def run_cli(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "inference", *FAST, *overrides, f"out={out}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)


def write_trained_lora(path: Path, seed: int) -> Path:
    """A LoRA file from the project's own network and writer, with random (non-zero) up weights."""
    cfg = TrainConfig(network=NetworkConfig(dim=4, alpha=4.0))
    bundle = build_tiny(seed=0)
    bundle.freeze()
    network = LoRANetwork(bundle, cfg.network)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.layers:
            layer.up.weight.copy_(torch.randn(layer.up.weight.shape, generator=generator) * 0.5)
    facts = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}
    return save_lora(path, network.state_dict(), lora_metadata(cfg, facts))


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_trained_lora(folder / "style.safetensors", seed=1)
    write_trained_lora(folder / "sub" / "detail.safetensors", seed=2)
    return folder


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("base")
    result = run_cli(out, "prompt=a red circle", "seed=42", "batch_size=2", "batch_count=2")
    assert result.returncode == 0, result.stderr
    return out, result


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_writes_count_x_size_pngs_with_seed_plus_i(base_run):
    out, result = base_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000-42.png", "00001-43.png", "00002-44.png", "00003-45.png"]  # no temp files left
    for index, name in enumerate(names):
        info = parse_infotext(read_infotext(out / name))
        assert (info["Prompt"], info["Seed"]) == ("a red circle", str(42 + index))
        assert (info["Sampler"], info["Schedule type"], info["Steps"]) == ("DPM++ 2M", "Karras", "3")
        assert (info["Size"], info["Model"]) == ("64x64", "tiny")
        assert "Lora hashes" not in info
    assert "Rendered 4 images in" in result.stdout and str(out) in result.stdout
    assert not np.array_equal(pixels(out / names[0]), pixels(out / names[1]))


def test_lora_tag_changes_the_image_and_weight_zero_is_the_base(base_run, lora_dir, tmp_path):
    base, _ = base_run
    common = ("seed=42", "batch_size=2", f"lora_dir={lora_dir}")
    applied = run_cli(tmp_path / "on", "prompt=a red circle <lora:style:1>", *common)
    assert applied.returncode == 0, applied.stderr
    assert "LoRA style" in applied.stdout
    info = parse_infotext(read_infotext(tmp_path / "on" / "00000-42.png"))
    assert info["Prompt"] == "a red circle <lora:style:1>"  # the infotext keeps the tag, as A1111's does
    assert info["Lora hashes"].startswith("style: ") and len(info["Lora hashes"]) == len("style: ") + 12
    assert not np.array_equal(pixels(tmp_path / "on" / "00000-42.png"), pixels(base / "00000-42.png"))

    zero = run_cli(tmp_path / "zero", "prompt=a red circle <lora:style:0>", *common)
    assert zero.returncode == 0, zero.stderr
    for name in ("00000-42.png", "00001-43.png"):
        assert np.array_equal(pixels(tmp_path / "zero" / name), pixels(base / name))


def test_unknown_lora_is_one_error_line_with_exit_code_2(lora_dir, tmp_path):
    result = run_cli(tmp_path / "out", "prompt=a <lora:missing:1>", f"lora_dir={lora_dir}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert all(text in errors[0] for text in ("'missing'", "style", "detail")), errors[0]
    assert not (tmp_path / "out").exists()


def compose(*overrides: str):
    """configs/inference/txt2img.yaml with command-line overrides, as `python -m inference` reads them."""
    with initialize_config_dir(config_dir=str(REPO / "configs" / "inference"), version_base="1.3"):
        return compose_config("txt2img", overrides=quote_prompt_overrides(list(overrides)))


def test_config_defaults_and_bad_values():
    config = load_render_config(compose("prompt=a, (b:1.2) <lora:x:1>", "seed=3"))
    assert (config.prompt, config.seed, config.model, config.sampler) == (
        "a, (b:1.2) <lora:x:1>",
        3,
        "toy",
        "DPM++ 2M",
    )
    with pytest.raises(ConfigError, match="multiples of 8"):
        load_render_config(compose("prompt=a", "width=60"))
    with pytest.raises(ConfigError, match="at most 8192 px, got 64x100000"):  # rendered for hours before
        load_render_config(compose("prompt=a", "height=100000"))
    with pytest.raises(ConfigError, match="would render 512x16384"):
        load_render_config(
            compose("prompt=a", "width=128", "height=4096", "hires.enabled=true", "hires.scale=4")
        )
    with pytest.raises(ConfigError, match="batch_size"):
        load_render_config(compose("prompt=a", "batch_size=0"))
    with pytest.raises(ConfigError, match="prompt is not set"):
        load_render_config(compose())


def test_lora_tag_without_lora_dir_or_with_a_bad_multiplier(lora_dir, tmp_path):
    _, networks = parse_prompt("a <lora:style:1>")
    with pytest.raises(LoraTagError, match="lora_dir is not set"):
        resolve_loras(networks["lora"], None)
    with pytest.raises(LoraTagError, match="is not a folder"):
        resolve_loras(networks["lora"], tmp_path / "nowhere")
    _, networks = parse_prompt("a <lora:style:strong>")
    with pytest.raises(LoraTagError, match="style:strong"):
        resolve_loras(networks["lora"], lora_dir)


def test_two_loras_add_up_and_restore_exactly(lora_dir):
    model = build_tiny(seed=0)
    _, networks = parse_prompt("x <lora:style:1> <lora:detail:0.5:0>")
    loras = resolve_loras(networks["lora"], lora_dir)
    assert [(lo.name, lo.te_multiplier, lo.unet_multiplier) for lo in loras] == [
        ("style", 1.0, 1.0),
        ("detail", 0.5, 0.0),
    ]
    assert lora_hashes(loras) == f"style: {loras[0].short_hash}, detail: {loras[1].short_hash}"
    before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    with applied_loras(model, loras):
        changed = [k for k, v in model.text_encoder.state_dict().items() if not torch.equal(v, before[k])]
        assert changed
    assert all(torch.equal(v, before[k]) for k, v in model.text_encoder.state_dict().items())
    assert all(torch.equal(v, unet_before[k]) for k, v in model.unet.state_dict().items())


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle <lora:style:0.8>",
        "(masterpiece:1.2), \\(artist\\), it's",
        "end\\",
        "",
        "a=b, c",
        "a red star AND a blue square :1.2",
    ],
)
def test_prompts_reach_hydra_unchanged(prompt):
    (override,) = quote_prompt_overrides([f"prompt={prompt}"])
    assert OverridesParser.create().parse_override(override).value() == prompt


def test_numbering_continues_after_existing_images(tmp_path):
    for name in ("00000-1.png", "00007-3.png", "notes.png"):
        (tmp_path / name).touch()
    assert next_image_number(tmp_path) == 8


def test_single_file_model_and_vae_override_as_in_a1111_folders(base_run, tmp_path):
    """models/Stable-diffusion/<name>.safetensors (+ .yaml) renders as the same weights in a folder do, and
    the infotext names it and its short hash; a VAE file from models/VAE changes the picture and is named."""
    import hashlib

    import yaml
    from safetensors.torch import save_file

    from inference.models.ldm_export import bundle_to_ldm, original_config, vae_to_ldm

    tiny = build_tiny(seed=0)  # the weights `model=tiny` renders with
    checkpoint = tmp_path / "Stable-diffusion" / "tinymix_v1.safetensors"
    checkpoint.parent.mkdir()
    save_file({k: v.contiguous() for k, v in bundle_to_ldm(tiny).items()}, checkpoint)
    checkpoint.with_suffix(".yaml").write_text(yaml.safe_dump(original_config(tiny)))
    tiny.tokenizer.save_pretrained(tmp_path / "tokenizer")
    vae_file = tmp_path / "VAE" / "other.vae.safetensors"
    vae_file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in vae_to_ldm(build_tiny(seed=5).vae, prefix="").items()}, vae_file)

    # The conversion itself is exact: the single file loads back to the folder model's weights, bit for bit.
    loaded = load_model(str(checkpoint), "cpu", tokenizer=str(tmp_path / "tokenizer"))
    for part in ("unet", "vae", "text_encoder"):
        expected, got = getattr(tiny, part).state_dict(), getattr(loaded, part).state_dict()
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[key], got[key]) for key in expected), part

    def same_render(a: np.ndarray, b: np.ndarray) -> bool:
        """Equal up to float rounding. Equal weights can still render a level apart on some CPUs (AMD EPYC,
        AVX2: 0.008 % of pixels one level off): the two loaders build the models differently (e.g. memory
        layout), which can change the kernels and summation order. Allow 2 levels in <= 0.1 % of pixels."""
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        return int(diff.max()) <= 2 and float(np.any(diff > 0, axis=-1).mean()) <= 0.001

    common = [f"model={checkpoint}", f"tokenizer={tmp_path / 'tokenizer'}", "prompt=a red circle", "seed=42"]
    plain = run_cli(tmp_path / "plain", *common)
    assert plain.returncode == 0, plain.stderr
    image = next((tmp_path / "plain").glob("*.png"))
    folder_out, _ = base_run
    folder_image = pixels(sorted(folder_out.glob("*-42.png"))[0])
    assert same_render(pixels(image), folder_image)
    info = parse_infotext(read_infotext(image))
    assert info["Model"] == "tinymix_v1"
    assert info["Model hash"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert "VAE" not in info

    with_vae = run_cli(tmp_path / "vae", *common, f"vae={vae_file}")
    assert with_vae.returncode == 0, with_vae.stderr
    image = next((tmp_path / "vae").glob("*.png"))
    info = parse_infotext(read_infotext(image))
    assert (
        info["VAE"] == "other.vae"
        and info["VAE hash"] == hashlib.sha256(vae_file.read_bytes()).hexdigest()[:10]
    )
    assert not same_render(pixels(image), folder_image)  # another VAE: a change far beyond rounding


def test_a_truncated_init_image_is_one_error_line_naming_it(tmp_path):
    broken = tmp_path / "start.png"
    Image.new("RGB", (64, 64), "red").save(broken)
    broken.write_bytes(broken.read_bytes()[:60])  # cut inside the image data
    result = run_cli(tmp_path / "out", "prompt=a red circle", f"init_image={broken}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"init_image={broken} cannot be read as an image" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cfg_scale=nan"], "cfg_scale must be a finite number, got nan"),  # rendered black with exit 0
        (["denoising_strength=inf"], "denoising_strength must be a finite number"),
        (["out={file}"], "is a file: give a folder for the images"),  # a FileExistsError traceback before
        (["clip_skip=0"], "clip_skip must be at least 1"),  # a ValueError traceback from the text encoder
    ],
)
def test_values_no_picture_can_come_from_are_refused(tmp_path, overrides, message):
    (tmp_path / "afile").write_text("")
    overrides = [o.format(file=tmp_path / "afile") for o in overrides]
    with pytest.raises(ConfigError, match=message):
        load_render_config(compose("prompt=a red circle", *overrides))


def test_clip_skip_beyond_the_text_encoders_layers_is_one_line(tmp_path):
    result = run_cli(tmp_path / "out", "prompt=a red circle", "clip_skip=5")  # the toy encoder has 2 layers
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: clip_skip=5 is more than this model's 2 text-encoder layers: use 1 to 2"], (
        result.stderr
    )


def test_broken_engine_inputs_are_refused_or_skipped_by_name(lora_dir, tmp_path):
    """A LoRA with NaN weights is one error line (it rendered black with exit 0); a broken embedding file
    nobody uses and a LoRA that patches no layer are skipped with a warning naming them, and the LoRA is
    left out of "Lora hashes"."""
    loras = tmp_path / "loras"
    loras.mkdir()
    tensors = load_file(lora_dir / "style.safetensors")
    key = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, loras / "diverged.safetensors")
    result = run_cli(tmp_path / "out", "prompt=a red circle <lora:diverged:1>", f"lora_dir={loras}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "diverged.safetensors" in errors[0] and "NaN" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()

    save_file({"lora_unet_other_arch.lora_down.weight": torch.ones(2, 8),
               "lora_unet_other_arch.lora_up.weight": torch.ones(8, 2)}, loras / "elsewhere.safetensors")  # fmt: skip
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    (embeddings / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    result = run_cli(
        tmp_path / "out", "prompt=a red circle <lora:elsewhere:1>", f"lora_dir={loras}",
        f"embeddings_dir={embeddings}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "LoRA elsewhere" in result.stderr and "patches no layer" in result.stderr
    warned = [line for line in result.stderr.splitlines() if "LoRA elsewhere" in line]
    assert warned and all(line.startswith("warning: LoRA elsewhere") for line in warned), result.stderr
    assert "cut.safetensors" in result.stderr and "not a readable" in result.stderr
    infotext = read_infotext(next((tmp_path / "out").glob("*.png")))
    assert "<lora:elsewhere:1>" in infotext and "Lora hashes" not in infotext
