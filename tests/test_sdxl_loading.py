"""SDXL base models load as users have them: a diffusers folder, an SGM single file, a VAE override, v-pred
markers, and `model=sdxl_arch` (the real architecture, built on the meta device for key checks)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import yaml
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig

from inference.models import loading, sdxl_config
from inference.models.bundle import ModelBundle
from inference.models.ldm_export import unet_names, vae_to_ldm
from inference.models.loading import load_base_model
from inference.models.sdxl_arch import SDXL_ARCH_DIR, build_sdxl_arch
from inference.models.sdxl_single_file import load_sdxl_single_file
from inference.models.single_file import load_single_file
from inference.models.tiny import tiny_vae
from inference.models.tiny_sdxl import build_tiny_sdxl
from inference.models.vae_override import with_vae
from tests.sdxl_export import BIG_G, sdxl_bundle_to_sgm, sgm_config
from train.config import ModelConfig
from train.errors import ModelLoadError

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny() -> ModelBundle:
    return build_tiny_sdxl(seed=4)


@pytest.fixture
def tokenizer_dir(tmp_path, tiny):
    tiny.tokenizer.save_pretrained(tmp_path / "tokenizer")
    return str(tmp_path / "tokenizer")


def _assert_same_model(a: ModelBundle, b: ModelBundle) -> None:
    for part in PARTS:
        state_a, state_b = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert state_a.keys() == state_b.keys(), part
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), part


def _write_file(bundle, path, sidecar=True, markers=(), state=None, **config):
    state = sdxl_bundle_to_sgm(bundle, markers) if state is None else state
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    if sidecar:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(sgm_config(bundle, **config)))
    return path


def _save_with_pipeline(bundle, folder):
    scheduler = EulerDiscreteScheduler.from_config(bundle.noise_scheduler.config)
    pipe = StableDiffusionXLPipeline(
        vae=bundle.vae, text_encoder=bundle.text_encoder, text_encoder_2=bundle.text_encoder_2,
        tokenizer=bundle.tokenizer, tokenizer_2=bundle.tokenizer_2, unet=bundle.unet, scheduler=scheduler,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def test_diffusers_folder_saved_by_the_sdxl_pipeline_loads_back_exactly(tmp_path, tiny):
    folder = _save_with_pipeline(tiny, tmp_path / "sdxl")
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(folder)))
    _assert_same_model(tiny, loaded)
    assert loaded.is_sdxl and loaded.base_model_version == "sdxl_base_v1-0"
    assert loaded.latent_scale == pytest.approx(0.13025)
    text = "sls toy, blue background"
    assert (
        loaded.tokenizer_2(text, padding="max_length", max_length=12).input_ids
        == tiny.tokenizer_2(text, padding="max_length", max_length=12).input_ids
    )
    assert loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token != "!"


def test_hub_id_of_an_sdxl_model_loads_from_the_hub_cache_offline(tmp_path, tiny, monkeypatch):
    import huggingface_hub.constants as hub

    model = tmp_path / "cache" / "models--tester--tiny-sdxl"
    _save_with_pipeline(tiny, model / "snapshots" / ("a" * 40))
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = load_base_model(ModelConfig(kind="pretrained", path="tester/tiny-sdxl"))
    _assert_same_model(tiny, loaded)
    assert loaded.is_sdxl and loaded.base_model_version == "sdxl_base_v1-0"


def test_sdxl_folder_without_its_second_text_encoder_names_what_is_missing(tmp_path, tiny):
    folder = _save_with_pipeline(tiny, tmp_path / "sdxl")
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(ModelLoadError, match=r"SDXL model folder .* lacks text_encoder_2/"):
        load_base_model(ModelConfig(kind="pretrained", path=str(folder)))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_sgm_single_file_loads_every_tensor_as_saved(tmp_path, tiny, tokenizer_dir, suffix):
    path = _write_file(tiny, tmp_path / f"sdxl{suffix}")
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(path), tokenizer=tokenizer_dir))
    _assert_same_model(tiny, loaded)
    assert loaded.is_sdxl and loaded.base_model_version == "sdxl_base_v1-0"
    for key in ("attention_head_dim", "transformer_layers_per_block"):  # from the sidecar and the shapes
        assert list(loaded.unet.config[key]) == list(tiny.unet.config[key]), key
    assert loaded.unet.config.addition_time_embed_dim == tiny.unet.config.addition_time_embed_dim
    assert loaded.text_encoder_2.config.hidden_act == "gelu"
    assert loaded.text_encoder.config.hidden_act == "quick_gelu"
    assert loaded.noise_scheduler.config.prediction_type == "epsilon"
    # Both tokenizers come from the one given; the second pads with "!" after the end token, as OpenCLIP.
    ids = loaded.tokenizer_2("a cat", padding="max_length", max_length=6).input_ids
    assert (
        ids[-1] == loaded.tokenizer_2.convert_tokens_to_ids("!")
        and ids[:4] == loaded.tokenizer("a cat").input_ids
    )
    # The same outputs as the original: pooled bigG text through its projection, and the UNet.
    tokens = torch.tensor([tiny.tokenizer("a red cube").input_ids])
    with torch.no_grad():
        assert torch.equal(tiny.text_encoder_2(tokens).text_embeds, loaded.text_encoder_2(tokens).text_embeds)
        args = _unet_inputs(tiny)
        assert torch.equal(tiny.unet(*args[:3], added_cond_kwargs=args[3]).sample,
                           loaded.unet(*args[:3], added_cond_kwargs=args[3]).sample)  # fmt: skip


def _unet_inputs(bundle):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    context = torch.randn(1, 5, bundle.unet.config.cross_attention_dim, generator=gen)
    pooled = torch.randn(1, bundle.text_encoder_2.config.projection_dim, generator=gen)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    return latents, torch.tensor([500]), context, {"text_embeds": pooled, "time_ids": time_ids}


def _base_like(tiny: ModelBundle) -> ModelBundle:
    """The tiny SDXL with SDXL base's hidden settings: 32 norm groups, heads of 64 channels (here one)."""
    unet = UNet2DConditionModel.from_config(
        {**tiny.unet.config, "norm_num_groups": 32, "attention_head_dim": [1, 1]}
    )
    encoders = [
        type(encoder)(CLIPTextConfig.from_dict({**encoder.config.to_dict(), "num_attention_heads": 1}))
        for encoder in (tiny.text_encoder, tiny.text_encoder_2)
    ]
    vae = tiny_vae(channels=(32, 32, 32, 32), groups=32)
    vae.register_to_config(scaling_factor=0.13025)
    return dataclasses.replace(tiny, unet=unet, vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1])


def test_without_a_sidecar_the_shapes_give_the_architecture_and_sdxl_base_the_rest(
    tmp_path, tiny, tokenizer_dir
):
    base_like = _base_like(tiny)
    path = _write_file(base_like, tmp_path / "sdxl.safetensors", sidecar=False)
    loaded = load_single_file(path, tokenizer=tokenizer_dir)
    _assert_same_model(base_like, loaded)
    assert loaded.unet.config.attention_head_dim == [1, 1]
    assert loaded.text_encoder_2.config.num_attention_heads == 1
    assert loaded.vae.config.norm_num_groups == 32 and loaded.latent_scale == pytest.approx(0.13025)
    args = _unet_inputs(base_like)
    with torch.no_grad():
        assert torch.equal(base_like.unet(*args[:3], added_cond_kwargs=args[3]).sample,
                           loaded.unet(*args[:3], added_cond_kwargs=args[3]).sample)  # fmt: skip
    # The tiny model's own settings (1 and 8 norm groups) show in no shape: without its sidecar, a clear error.
    path = _write_file(tiny, tmp_path / "tiny.safetensors", sidecar=False)
    with pytest.raises(ModelLoadError, match=r"cannot build the architecture .* SGM config next to it"):
        load_single_file(path, tokenizer=tokenizer_dir)
    # Its SGM config given from elsewhere serves as the sidecar would.
    (tmp_path / "tiny_config.yaml").write_text(yaml.safe_dump(sgm_config(tiny)))
    _assert_same_model(
        tiny, load_single_file(path, tokenizer_dir, original_config=tmp_path / "tiny_config.yaml")
    )


@pytest.mark.parametrize(
    ("markers", "scaling", "prediction", "zero_snr"),
    [
        (("v_pred",), "EpsScaling", "v_prediction", False),
        (("v_pred", "ztsnr"), "EpsScaling", "v_prediction", True),
        (("ztsnr",), "EpsScaling", "epsilon", False),  # ztsnr counts only for a v model, as in ComfyUI
        ((), "VScaling", "v_prediction", False),
    ],
)
def test_v_prediction_markers_and_sidecar_set_the_schedule(
    tmp_path, tiny, tokenizer_dir, markers, scaling, prediction, zero_snr
):
    path = _write_file(tiny, tmp_path / "sdxl.safetensors", markers=markers, scaling=scaling)
    scheduler = load_single_file(path, tokenizer=tokenizer_dir).noise_scheduler
    assert scheduler.config.prediction_type == prediction
    assert scheduler.config.rescale_betas_zero_snr is zero_snr
    assert bool(scheduler.alphas_cumprod[-1] < 1e-6) is zero_snr


def test_vae_override_keeps_sdxl_scaling_unless_the_vae_says_otherwise(tmp_path, tiny):
    other = tiny_vae()
    save_file(vae_to_ldm(other, prefix=""), tmp_path / "fix.safetensors")
    from_file = with_vae(tiny, tmp_path / "fix.safetensors")
    assert from_file.latent_scale == pytest.approx(0.13025)
    assert torch.equal(from_file.vae.encoder.conv_in.weight, other.encoder.conv_in.weight)
    other.save_pretrained(tmp_path / "folder")  # a config that says 0.18215 is kept
    assert with_vae(tiny, tmp_path / "folder").latent_scale == pytest.approx(0.18215)
    config_path = tmp_path / "folder" / "config.json"
    config = json.loads(config_path.read_text())
    del config["scaling_factor"]  # one that says nothing keeps the model's
    config_path.write_text(json.dumps(config))
    assert with_vae(tiny, tmp_path / "folder").latent_scale == pytest.approx(0.13025)
    with pytest.raises(
        ModelLoadError, match=r"^the VAE override \(model.vae, or vae= when rendering\): .*nope"
    ):
        with_vae(tiny, tmp_path / "nope.safetensors")


def test_sdxl_file_without_the_text_projection_or_with_one_encoder_is_a_clear_error(
    tmp_path, tiny, tokenizer_dir
):
    state = sdxl_bundle_to_sgm(tiny)
    del state[BIG_G + "text_projection"]
    path = _write_file(tiny, tmp_path / "a.safetensors", state=state)
    with pytest.raises(ModelLoadError, match="no text_projection"):
        load_single_file(path, tokenizer=tokenizer_dir)
    only_l = {k: v for k, v in sdxl_bundle_to_sgm(tiny).items() if not k.startswith(BIG_G)}
    path = _write_file(tiny, tmp_path / "b.safetensors", state=only_l)
    with pytest.raises(ModelLoadError, match="not both of SDXL's text encoders"):
        load_single_file(path, tokenizer=tokenizer_dir)
    no_size_embedding = {k: v for k, v in sdxl_bundle_to_sgm(tiny).items() if ".label_emb." not in k}
    path = _write_file(tiny, tmp_path / "c.safetensors", state=no_size_embedding)
    with pytest.raises(ModelLoadError, match=r"incomplete UNet or VAE weights \(no .*label_emb.0.0.weight"):
        load_single_file(path, tokenizer=tokenizer_dir)


def test_tokenizer_override_on_an_sdxl_folder_replaces_both(tmp_path, tiny, tokenizer_dir):
    folder = _save_with_pipeline(tiny, tmp_path / "sdxl")
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(folder), tokenizer=tokenizer_dir))
    assert loaded.tokenizer.name_or_path == loaded.tokenizer_2.name_or_path == tokenizer_dir
    assert loaded.tokenizer_2.pad_token == "!"


def test_sdxl_arch_on_the_meta_device_has_sdxl_base_module_counts_and_no_memory():
    bundle = build_sdxl_arch(meta=True)
    unet = bundle.unet
    assert all(p.is_meta for part in PARTS for p in getattr(bundle, part).parameters())
    # Transformer layers: down 2 blocks x 2 (640) + 2 x 10 (1280), mid 10, up 3 x 10 + 3 x 2 = 70.
    blocks = sum(isinstance(m, BasicTransformerBlock) for m in unet.modules())
    assert blocks == 2 * 2 + 2 * 10 + 10 + 3 * 10 + 3 * 2 == 70
    assert sum(isinstance(m, Transformer2DModel) for m in unet.modules()) == 2 + 2 + 1 + 3 + 3
    # Linear layers: 10 per transformer layer (q, k, v, out twice; GEGLU in and out), proj_in/out per
    # transformer, one time projection per resnet (6 down, 2 mid, 9 up), 2 time + 2 added embedding.
    linears = sum(isinstance(m, torch.nn.Linear) for m in unet.modules())
    assert linears == 10 * 70 + 2 * 11 + (6 + 2 + 9) + 4 == 743
    count = sum(p.numel() for p in unet.parameters())
    assert count == 2_567_463_684
    assert sum(p.numel() for p in bundle.text_encoder_2.parameters()) == 694_659_840
    assert bundle.is_sdxl and bundle.vae.config.scaling_factor == 0.13025


def test_the_single_file_shape_reader_gives_sdxl_base_for_sdxl_base_shapes():
    """The SGM names and meta tensors of the real architecture, read back into its diffusers config."""
    unet = build_sdxl_arch(meta=True).unet
    tensors = unet.state_dict()
    state = {name: tensors[key] for key, name in unet_names(unet).items()}
    config = sdxl_config.unet_config(state, sdxl_config.SdxlSettings(), pooled=1280)
    shipped = json.loads((SDXL_ARCH_DIR / "unet" / "config.json").read_text())
    for key, value in config.items():
        assert value == shipped[key], key


def test_the_real_sdxl_layout_converts_key_for_key_on_the_meta_device(tmp_path, tokenizer_dir):
    """SDXL base's full SGM key set (meta tensors: shapes, no memory) loads into SDXL base's classes."""
    base = build_sdxl_arch(meta=True)
    state = sdxl_bundle_to_sgm(base)
    assert (
        len([k for k in state if k.startswith("conditioner.embedders.1.model.transformer.resblocks.")])
        == 32 * 12
    )
    loaded = load_sdxl_single_file(tmp_path / "sd_xl_base_1.0.safetensors", state, tokenizer_dir)
    for part in PARTS:
        shapes = {k: v.shape for k, v in getattr(base, part).state_dict().items()}
        assert {k: v.shape for k, v in getattr(loaded, part).state_dict().items()} == shapes, part
    shipped = json.loads((SDXL_ARCH_DIR / "text_encoder_2" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "projection_dim", "hidden_act"):
        assert getattr(loaded.text_encoder_2.config, key) == shipped[key], key
    assert loaded.text_encoder.config.num_attention_heads == 12
    assert loaded.unet.config.attention_head_dim == [5, 10, 20]


def test_model_sdxl_arch_composes_and_loads_through_the_base_model_loader(compose_config, monkeypatch):
    cfg = compose_config("model=sdxl_arch", "dataset.train_dir=x")
    assert cfg.model.kind == "sdxl_arch"
    # The full build is 14 GB of float32: the loader's dispatch is checked with the meta build.
    monkeypatch.setattr(loading, "build_sdxl_arch", lambda seed: build_sdxl_arch(seed, meta=True))
    bundle = load_base_model(cfg.model)
    assert bundle.source == "sdxl_arch" and bundle.is_sdxl and bundle.unet.device.type == "meta"
