"""SD 2.x single files (LDM layout, OpenCLIP ViT-H text encoder) load for training and rendering.

The model is small (widths 32/64, a 4-block text encoder) but has SD 2's structure: linear proj_in/out,
heads of a fixed channel count, OpenCLIP's stacked in_proj, the UNet reading the penultimate text layer.
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import pytest
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from inference.extra_networks import parse_prompt
from inference.models import ldm_config
from inference.models.bundle import ModelBundle, sd_noise_scheduler
from inference.models.loading import load_base_model
from inference.models.single_file import load_single_file
from inference.models.tiny import tiny_vae
from inference.models.tokenizer import build_tokenizer
from inference.prompt_chunks import tokenize_prompt
from inference.prompt_loras import applied_loras, resolve_loras
from inference.txt2img import txt2img
from tests.ldm_export import sd2_bundle_to_ldm, sd2_original_config
from tests.test_cli import QUICK, run_train
from tests.test_inference_cli import run_cli
from train.caption_tokens import caption_tokens
from train.config import ModelConfig, TrainConfig
from train.errors import ModelLoadError
from train.kohya_config import convert
from train.model_setup import warn_clip_skip_on_sd2
from train.network.lora_file import lora_metadata, model_facts

SHORT = [o for o in QUICK if not o.startswith("training.max_train_epochs=")]
HEAD_CHANNELS = 8  # SD 2's num_head_channels is 64; the widths here are 32 and 64
BLOCKS = 4  # OpenCLIP ViT-H has 24; the UNet reads the output of the one before the last


def sd2_small(seed: int = 0) -> ModelBundle:
    """A random SD 2.x-structured model whose text encoder still holds all its blocks, as the file does."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer(folder)
    tokenizer.pad_token = "!"
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=128, num_hidden_layers=BLOCKS,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(config)
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
            attention_head_dim=(32 // HEAD_CHANNELS, 64 // HEAD_CHANNELS), use_linear_projection=True,
        )  # fmt: skip
        vae = tiny_vae()
    bundle = ModelBundle(unet, vae, text_encoder, tokenizer, sd_noise_scheduler(), "sd2_small", "sd_v2")
    bundle.freeze()
    return bundle


def write_sd2(bundle: ModelBundle, path, sidecar: dict | None) -> None:
    save_file({k: v.contiguous() for k, v in sd2_bundle_to_ldm(bundle).items()}, path)
    if sidecar is not None:
        path.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar))


@pytest.fixture(scope="module")
def original() -> ModelBundle:
    return sd2_small(seed=2)


@pytest.fixture(scope="module")
def sd1_tokenizer_dir(tmp_path_factory) -> str:
    """The SD 1 tokenizer files (pad = EOS): the loader makes SD 2's OpenCLIP tokenizer from them."""
    folder = tmp_path_factory.mktemp("sd1_tokenizer")
    build_tokenizer(folder)
    return str(folder)


@pytest.fixture(scope="module")
def sd2_file(tmp_path_factory, original):
    path = tmp_path_factory.mktemp("sd2") / "sd2_small.safetensors"
    write_sd2(original, path, sd2_original_config(original, HEAD_CHANNELS))
    return path


def _header(bundle: ModelBundle) -> dict[str, str]:
    """The LoRA header a run on `bundle` writes (the run's own facts made up)."""
    run = {"steps": 2, "epoch": 1, "num_epochs": 1, "max_train_steps": 2, "num_batches_per_epoch": 2}
    return lora_metadata(TrainConfig(), run | model_facts(bundle))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v for k, v in module.state_dict().items()}


def test_sd2_file_loads_bit_for_bit_with_the_penultimate_layer_as_output(
    sd2_file, original, sd1_tokenizer_dir
):
    loaded = load_base_model(ModelConfig(kind="pretrained", path=str(sd2_file), tokenizer=sd1_tokenizer_dir))
    for part in ("unet", "vae"):
        expected, got = getattr(original, part).state_dict(), getattr(loaded, part).state_dict()
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[k], got[k]) for k in expected), part
    # The text encoder is the original's blocks up to the penultimate one, then its final LayerNorm.
    kept = {k: v for k, v in _state(original.text_encoder).items() if f"layers.{BLOCKS - 1}." not in k}
    got = _state(loaded.text_encoder)
    assert kept.keys() == got.keys() and all(torch.equal(kept[k], got[k]) for k in kept)
    config = loaded.text_encoder.config
    assert (config.num_hidden_layers, config.hidden_act, config.num_attention_heads) == (
        BLOCKS - 1,
        "gelu",
        4,
    )
    ids = torch.tensor([tokenize_prompt(loaded.tokenizer, "a red circle, blue background")[0].tokens])
    with torch.no_grad():
        states = original.text_encoder(ids, output_hidden_states=True).hidden_states
        penultimate = original.text_encoder.final_layer_norm(states[-2])
        torch.testing.assert_close(loaded.text_encoder(ids).last_hidden_state, penultimate, rtol=0, atol=1e-6)
        latents, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
        # Equal weights, but the loader's tensors may differ in memory layout, which can change kernels.
        expected_out = original.unet(latents, 10, context).sample
        torch.testing.assert_close(loaded.unet(latents, 10, context).sample, expected_out, rtol=0, atol=1e-5)
    assert list(loaded.unet.config.attention_head_dim) == [4, 8] and loaded.unet.config.use_linear_projection
    assert loaded.noise_scheduler.config.prediction_type == "epsilon"
    assert not loaded.unet.config.upcast_attention
    assert loaded.base_model_version == "sd_v2"
    meta = _header(loaded)
    assert (meta["ss_v2"], meta["ss_base_model_version"]) == ("True", "sd_v2")


def test_sd2_tokenizer_pads_with_bang_after_the_end_token_as_open_clip(sd2_file, sd1_tokenizer_dir):
    sd2 = load_single_file(sd2_file, tokenizer=sd1_tokenizer_dir).tokenizer
    sd1 = build_tokenizer(tempfile.mkdtemp())
    assert sd2.pad_token == "!" and sd2.pad_token_id == 0
    text = "a red circle"
    assert sd2(text).input_ids == sd1(text).input_ids  # the same BPE vocabulary
    words = sd1(text, add_special_tokens=False).input_ids
    bos, eos = sd1.bos_token_id, sd1.eos_token_id
    (chunk_sd2,) = tokenize_prompt(sd2, text)
    (chunk_sd1,) = tokenize_prompt(sd1, text)
    assert chunk_sd2.tokens == [bos, *words, eos] + [0] * (75 - len(words))
    assert chunk_sd1.tokens == [bos, *words] + [eos] * (77 - 1 - len(words))  # SD 1 pads with EOS
    # Training's empty filler chunks (max_token_length 150) pad the same way.
    ids = caption_tokens(sd2, text, max_token_length=150).ids.tolist()
    assert ids[:77] == chunk_sd2.tokens and ids[77:] == [bos, eos] + [0] * 75
    (full,) = tokenize_prompt(sd2, " ".join(["red"] * 75))
    assert full.tokens[-1] == eos and 0 not in full.tokens  # a full chunk has no padding at all


def test_v_yaml_makes_a_v_model_with_upcast_attention_and_layer_last_keeps_every_block(
    tmp_path, original, sd1_tokenizer_dir
):
    path = tmp_path / "sd2_v.safetensors"
    write_sd2(original, path, sd2_original_config(original, HEAD_CHANNELS, parameterization="v"))
    loaded = load_single_file(path, tokenizer=sd1_tokenizer_dir)
    assert loaded.noise_scheduler.config.prediction_type == "v_prediction"
    assert loaded.unet.config.upcast_attention
    meta = _header(loaded)
    assert (meta["ss_base_model_version"], meta["modelspec.architecture"]) == (
        "sd_v2_v",
        "stable-diffusion-v2-768-v/lora",
    )
    path.with_suffix(".yaml").write_text(
        yaml.safe_dump(sd2_original_config(original, HEAD_CHANNELS, layer="last"))
    )
    last = load_single_file(path, tokenizer=sd1_tokenizer_dir).text_encoder
    assert last.config.num_hidden_layers == BLOCKS
    expected = _state(original.text_encoder)
    assert all(torch.equal(expected[k], v) for k, v in _state(last).items())


def test_without_a_sidecar_sd2_is_read_as_the_512_epsilon_model_and_says_so(
    tmp_path, original, sd1_tokenizer_dir, caplog
):
    built_in = ldm_config.unet_config(ldm_config.default_original_config("sd2"))
    assert list(built_in["attention_head_dim"]) == [5, 10, 20, 20]  # v2-inference.yaml: 64-channel heads
    assert (built_in["cross_attention_dim"], built_in["use_linear_projection"]) == (1024, True)
    assert not built_in["upcast_attention"]
    path = tmp_path / "no_yaml.safetensors"
    write_sd2(original, path, sidecar=None)
    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError, match=r"SD 2\.x 512 epsilon archi"):
        load_single_file(path, tokenizer=sd1_tokenizer_dir)  # the small model is not SD 2's size
    (line,) = [r.getMessage() for r in caplog.records if "epsilon" in r.getMessage()]
    assert "model.v_parameterization=true" in line and "no_yaml.yaml" in line


def test_an_sd2_file_missing_text_blocks_names_them(tmp_path, original, sd1_tokenizer_dir):
    path = tmp_path / "broken.safetensors"
    state = sd2_bundle_to_ldm(original)
    del state["cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    path.with_suffix(".yaml").write_text(yaml.safe_dump(sd2_original_config(original, HEAD_CHANNELS)))
    with pytest.raises(
        ModelLoadError, match=r"text encoder weights .* 1 missing .*layers\.1\.mlp\.fc1\.weight"
    ):
        load_single_file(path, tokenizer=sd1_tokenizer_dir)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_a_lora_on_an_sd2_v_file_and_render_it_with_the_engine(tmp_path, original, sd1_tokenizer_dir):
    """`python -m train model.path=<sd2>.safetensors` trains a LoRA (text encoder too) on the v model, and
    `python -m inference model=<sd2>.safetensors` renders with it what SD 2 means: the penultimate layer."""
    model = tmp_path / "Stable-diffusion" / "sd2_small_v.safetensors"
    model.parent.mkdir()
    write_sd2(original, model, sd2_original_config(original, HEAD_CHANNELS, parameterization="v"))
    run_dir = tmp_path / "run"
    result = run_train(
        run_dir, *SHORT, "eval.enabled=false", "training.max_train_steps=2", "model.kind=pretrained",
        f"model.path={model}", f"model.tokenizer={sd1_tokenizer_dir}",
        "optimizer.unet_lr=1e-2", "optimizer.text_encoder_lr=1e-2",  # 2 steps that show in the picture
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lora = run_dir / "char_lora.safetensors"
    with safe_open(str(lora), "pt") as handle:
        meta = handle.metadata()
    assert (meta["ss_v2"], meta["ss_base_model_version"]) == ("True", "sd_v2_v")
    tensors = load_file(lora)
    te_layers = {k.split("_layers_")[1].split("_")[0] for k in tensors if k.startswith("lora_te_")}
    assert te_layers == {str(i) for i in range(BLOCKS - 1)}  # the 3 blocks the UNet reads, not the 4th
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].ndim == 2  # linear

    out = tmp_path / "render"
    prompt = "sls star, blue background <lora:char_lora:1>"
    rendered = run_cli(out, f"model={model}", f"tokenizer={sd1_tokenizer_dir}", f"lora_dir={run_dir}",
                       f"prompt={prompt}", "seed=5")  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    (image,) = out.glob("*.png")
    # The reference: the original modules (all 4 text blocks) read at clip skip 2 = SD 2's penultimate layer.
    reference = ModelBundle(original.unet, original.vae, original.text_encoder, original.tokenizer,
                            ldm_config.noise_scheduler({"model": {"params": {"parameterization": "v"}}}), "ref")  # fmt: skip
    _, networks = parse_prompt(prompt)
    (entry,) = resolve_loras(networks["lora"], run_dir)
    render = {
        "steps": 3,
        "cfg_scale": 5,
        "width": 64,
        "height": 64,
        "sampler": "DPM++ 2M",
        "scheduler": "Karras",
    }
    with applied_loras(reference, [entry]):
        expected = np.asarray(txt2img(reference, "sls star, blue background", seed=5, clip_skip=2, **render))
    plain = np.asarray(txt2img(reference, "sls star, blue background", seed=5, clip_skip=2, **render))
    # Equal up to float rounding: a 3-block encoder against a 4-block one read at clip skip 2, LoRA patches on
    # two differently built models (seen: 1 level in 0.15 % of pixels). Allow 2 levels in <= 1 % of pixels.
    diff = np.abs(pixels(image).astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max()) <= 2 and float(np.any(diff > 0, axis=-1).mean()) <= 0.01
    assert np.abs(plain.astype(np.int16) - expected.astype(np.int16)).max() > 8  # the LoRA changed it


def test_clip_skip_above_one_on_sd2_warns_that_a1111_ignores_it(original, caplog):
    with caplog.at_level(logging.WARNING):
        warn_clip_skip_on_sd2(model_facts(original), clip_skip=1)
        warn_clip_skip_on_sd2({"text_encoder_hidden_size": 768}, clip_skip=2)  # SD 1.x: clip skip 2 is common
        assert not caplog.records
        warn_clip_skip_on_sd2(model_facts(original), clip_skip=2)
    (record,) = caplog.records
    assert "A1111 ignores clip skip for SD 2" in record.getMessage()


def test_kohya_v2_flag_is_read_from_the_model_not_reported_as_lacking():
    conversion = convert({"v2": True, "v_parameterization": True})
    assert conversion.lacking == [] and ("model.v_parameterization", True) in conversion.settings


@pytest.mark.slow
def test_sd2_sized_file_without_yaml_loads_as_sd2_512(tmp_path):
    """SD 2's real shapes (random fp16 weights, 2.6 GB) through the built-in v2-inference.yaml architecture:
    UNet 865,910,724 parameters (diffusers' SD 2 UNet), OpenCLIP ViT-H's 24 blocks read at the 23rd."""
    original = ldm_config.default_original_config("sd2")
    text = CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
    )  # fmt: skip
    with torch.device("meta"):
        parts = (
            UNet2DConditionModel.from_config(ldm_config.unet_config(original)),
            AutoencoderKL.from_config(ldm_config.vae_config(original)),
            CLIPTextModel(text),
        )
    generator = torch.Generator().manual_seed(0)
    for part in parts:  # half precision and a cheap fill keep this test within a few GB
        part.half().to_empty(device="cpu")
        for tensor in part.state_dict().values():
            tensor.normal_(0, 0.02, generator=generator)
    unet, vae, text_encoder = parts
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer(folder)
    bundle = ModelBundle(unet, vae, text_encoder, tokenizer, sd_noise_scheduler(), "sd2_sized")
    path = tmp_path / "sd2.safetensors"
    state = sd2_bundle_to_ldm(bundle)
    save_file(state, path)
    del state
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded = load_single_file(path, tokenizer=str(tmp_path / "tokenizer"))
    for part, blocks_left_out in (("unet", 0), ("vae", 0), ("text_encoder", 1)):
        expected, got = _state(getattr(bundle, part)), _state(getattr(loaded, part))
        expected = {k: v for k, v in expected.items() if not (blocks_left_out and "layers.23." in k)}
        assert expected.keys() == got.keys(), part
        assert all(torch.equal(expected[k].float(), got[k]) for k in expected), part
    assert loaded.text_encoder.config.num_hidden_layers == 23
    assert loaded.noise_scheduler.config.prediction_type == "epsilon"
