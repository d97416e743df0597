"""Single-file checkpoints in the original LDM layout load as A1111 loads them; pickles only weights-only."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from inference.models import ldm_config
from inference.models.bundle import ModelBundle
from inference.models.ldm_export import bundle_to_ldm, original_config, vae_to_ldm
from inference.models.loading import load_base_model
from inference.models.single_file import load_single_file
from inference.models.tiny import SD15_ARCH_DIR, build_sd15_arch, build_tiny
from inference.models.vae_override import load_vae
from train.config import ModelConfig
from train.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny() -> ModelBundle:
    return build_tiny(seed=3)


@pytest.fixture
def tokenizer_dir(tmp_path, tiny):
    folder = tmp_path / "tokenizer"
    tiny.tokenizer.save_pretrained(folder)
    return str(folder)


def _write(bundle: ModelBundle, path, state=None, yaml_config=True, **yaml_kwargs):
    state = bundle_to_ldm(bundle) if state is None else state
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({"state_dict": state, "global_step": 7, "epoch": 1}, path)
    if yaml_config:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(original_config(bundle, **yaml_kwargs)))
    return path


def _assert_same_model(a: ModelBundle, b: ModelBundle) -> None:
    for part in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(a, part), getattr(b, part))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_ldm_file_round_trip_gives_the_same_model(tmp_path, tiny, tokenizer_dir, suffix):
    path = _write(tiny, tmp_path / f"model{suffix}")
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(path), tokenizer=tokenizer_dir))
    _assert_same_model(tiny, loaded)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 7, tiny.unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        expected = tiny.unet(latents, 10, context).sample
        got = loaded.unet(latents, 10, context).sample
    assert torch.equal(expected, got)
    assert loaded.tokenizer("sls toy, blue").input_ids == tiny.tokenizer("sls toy, blue").input_ids
    assert loaded.noise_scheduler.config.prediction_type == "epsilon"
    assert loaded.source == str(path)
    assert not loaded.unet.training


def test_bundled_toy_model_round_trips_with_plain_blocks(tmp_path):
    toy = load_base_model(ModelConfig(kind="toy"))  # has a DownBlock2D level and a wider VAE
    path = _write(toy, tmp_path / "toy.safetensors")
    folder = tmp_path / "toy_tokenizer"
    toy.tokenizer.save_pretrained(folder)
    loaded = load_single_file(path, tokenizer=str(folder))
    _assert_same_model(toy, loaded)


def test_v_parameterization_in_the_yaml_sets_the_prediction_type(tmp_path, tiny, tokenizer_dir):
    path = _write(tiny, tmp_path / "v.safetensors", parameterization="v")
    assert (
        load_single_file(path, tokenizer=tokenizer_dir).noise_scheduler.config.prediction_type
        == "v_prediction"
    )


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ModelLoadError, match=r"evil\.ckpt was refused.*safetensors"):
        load_base_model(ModelConfig(kind="pretrained", path=str(path)))
    assert not marker.exists()


def test_random_bytes_named_ckpt_are_not_called_a_pickle(tmp_path):
    path = tmp_path / "download.ckpt"
    path.write_bytes(bytes(range(256)) * 8)  # neither a zip archive nor a pickle: a broken download
    with pytest.raises(
        ModelLoadError, match=r"download\.ckpt is not a PyTorch checkpoint \(ValueError: neither a"
    ):
        load_base_model(ModelConfig(kind="pretrained", path=str(path)))


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_vae_override_from_a_single_file(tmp_path, prefix, suffix):
    other = build_tiny(seed=9).vae
    path = tmp_path / f"vae{suffix}"
    state = vae_to_ldm(other, prefix=prefix)
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    bundle = load_base_model(ModelConfig(kind="tiny", init_seed=3, vae=str(path)))
    _assert_same_weights(other, bundle.vae)
    fresh = build_tiny(seed=3).vae  # the override keeps the mode of the VAE it replaces
    assert bundle.vae.training == fresh.training
    assert bundle.vae.encoder.conv_in.weight.requires_grad == fresh.encoder.conv_in.weight.requires_grad


def test_vae_override_from_a_diffusers_folder_keeps_its_own_config(tmp_path, tiny):
    other = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=8, latent_channels=4, layers_per_block=1,
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)  # fmt: skip
    other.save_pretrained(tmp_path / "vae_folder")
    vae = load_vae(tmp_path / "vae_folder", like=tiny.vae)
    assert list(vae.config.block_out_channels) == [8, 16]
    _assert_same_weights(other, vae)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"single-file checkpoint .*nope\.safetensors does not exist"):
        load_base_model(ModelConfig(kind="pretrained", path=str(tmp_path / "nope.safetensors")))


@pytest.mark.parametrize("name", ["junk.safetensors", "junk.ckpt"])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, name):
    (tmp_path / name).write_text("this is not a model\n" * 10)
    with pytest.raises(ModelLoadError, match=rf"{name} is not a"):
        load_single_file(tmp_path / name)


def test_a_checkpoint_without_unet_keys_is_a_clear_error(tmp_path, tiny):
    path = tmp_path / "vae_only.safetensors"
    save_file(vae_to_ldm(tiny.vae), path)
    with pytest.raises(ModelLoadError, match=r"no UNet weights .*model\.diffusion_model"):
        load_single_file(path)


def test_sd2_checkpoint_is_no_longer_refused_but_loaded_as_sd2(tmp_path, tokenizer_dir):
    """An OpenCLIP text encoder makes a file SD 2.x (loaded since; tests/test_sd2_single_file.py): this
    fragment of one is read with SD 2's architecture and its missing weights are named."""
    path = tmp_path / "sd2.safetensors"
    save_file(
        {
            "model.diffusion_model.out.2.bias": torch.zeros(4),
            "cond_stage_model.model.ln_final.bias": torch.zeros(8),
        },
        path,
    )
    with pytest.raises(ModelLoadError, match=r"UNet weights .* missing .*SD 2\.x 512 epsilon architecture"):
        load_single_file(path, tokenizer=tokenizer_dir)


def test_no_sidecar_yaml_means_sd15_and_a_mismatch_says_how_to_fix_it(tmp_path, tiny, tokenizer_dir):
    path = _write(tiny, tmp_path / "tiny.safetensors", yaml_config=False)
    with pytest.raises(
        ModelLoadError, match=r"UNet weights .* do not (match|fit).*SD 1\.5 architecture.*tiny\.yaml"
    ):
        load_single_file(path, tokenizer=tokenizer_dir)


def test_an_unloadable_tokenizer_says_how_to_give_one(tmp_path, tiny, monkeypatch):
    path = _write(tiny, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"cannot load the tokenizer .*model\.tokenizer="):
        load_single_file(path, tokenizer=str(tmp_path / "no" / "tokenizer"))
    monkeypatch.setattr(ldm_config, "CLIP_L", "no-such-user/no-such-tokenizer")  # a default not in the cache
    with pytest.raises(ModelLoadError, match=r"cannot load the tokenizer 'no-such-user/no-such-tokenizer'"):
        load_single_file(path)


def _as_plain(value):
    return list(value) if isinstance(value, list | tuple) else value


def _config_default(cls, key):
    return inspect.signature(cls.__init__).parameters[key].default


def test_built_in_sd15_config_matches_the_shipped_sd15_architecture():
    original = ldm_config.default_original_config()
    for cls, built in (
        (UNet2DConditionModel, ldm_config.unet_config),
        (AutoencoderKL, ldm_config.vae_config),
    ):
        shipped = cls.load_config(SD15_ARCH_DIR / ("unet" if cls is UNet2DConditionModel else "vae"))
        for key, value in built(original).items():
            expected = shipped.get(key, _config_default(cls, key))
            assert _as_plain(value) == _as_plain(expected), key


@pytest.mark.slow
def test_sd15_sized_file_without_yaml_loads_as_sd15(tmp_path):
    """The real SD 1.5 shapes (random weights, 4 GB) through the built-in SD 1.5 config."""
    model = build_sd15_arch(seed=0)
    path = tmp_path / "sd15.safetensors"
    state = bundle_to_ldm(model)
    save_file(state, path)
    del state
    folder = tmp_path / "tokenizer"
    model.tokenizer.save_pretrained(folder)
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(path), tokenizer=str(folder)))
    _assert_same_model(model, loaded)


def test_fp16_file_loads_as_float32(tmp_path, tiny, tokenizer_dir):
    state = {k: v.half() for k, v in bundle_to_ldm(tiny).items()}
    loaded = load_single_file(
        _write(tiny, tmp_path / "half.safetensors", state=state), tokenizer=tokenizer_dir
    )
    weight = loaded.unet.conv_in.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, tiny.unet.conv_in.weight.half().float())


def test_tokenizer_override_on_any_model(tmp_path, tokenizer_dir):
    bundle = load_base_model(ModelConfig(kind="tiny", tokenizer=tokenizer_dir))
    assert bundle.tokenizer("sls toy").input_ids == build_tiny(seed=0).tokenizer("sls toy").input_ids
