"""Kohya LoRA files patched into the tiny model: exact deltas, exact restoration, grids of strengths."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from inference.lora import LoraFormatError, applied_lora, load_lora_file, lora_key_map
from inference.lora_grid import render_lora_grid
from inference.models.tiny import build_tiny
from inference.txt2img import txt2img
from train.config import NetworkConfig, TrainConfig
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

FAST = dict(steps=3, width=64, height=64, cfg_scale=5.0)

# (kohya key, module path, part, lora layout, alpha) — one of each shape the loader must handle.
LAYERS = [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", "unet", "linear", 1.0),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
     "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj", "unet", "linear_as_4d", None),
    ("lora_unet_down_blocks_0_attentions_0_proj_in",
     "down_blocks.0.attentions.0.proj_in", "unet", "conv1x1_as_2d", 4.0),
    ("lora_unet_down_blocks_0_resnets_0_conv1", "down_blocks.0.resnets.0.conv1", "unet", "conv3x3", 1.0),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj",
     "encoder.layers.0.self_attn.q_proj", "te", "linear", 1.0),
    ("lora_te_text_model_encoder_layers_1_mlp_fc1", "encoder.layers.1.mlp.fc1", "te", "linear", 0.5),
]  # fmt: skip
RANK = 2


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def _layer(model, path: str, part: str) -> nn.Module:
    return (model.unet if part == "unet" else model.text_encoder).get_submodule(path)


def _pair(weight: torch.Tensor, layout: str, make) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA down/up tensors for `weight` in the given layout; `make(shape)` supplies the values."""
    out_f, in_f = weight.shape[:2]
    if layout == "linear":
        return make((RANK, in_f)), make((out_f, RANK))
    if layout == "linear_as_4d":
        return make((RANK, in_f, 1, 1)), make((out_f, RANK, 1, 1))
    if layout == "conv1x1_as_2d":
        return make((RANK, in_f)), make((out_f, RANK))
    return make((RANK, in_f, *weight.shape[2:])), make((out_f, RANK, 1, 1))


def write_lora(model, path, make, layers=LAYERS, extra: dict | None = None):
    """Write a kohya-layout LoRA over `layers` of the tiny model; returns the tensors written."""
    tensors = {}
    for key, module_path, part, layout, alpha in layers:
        down, up = _pair(_layer(model, module_path, part).weight, layout, make)
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
        if alpha is not None:
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata={"ss_network_dim": str(RANK)})
    return tensors


def integer_maker(seed: int = 0):
    # Small integers keep up @ down exact in fp32, so the expected weights can be compared bitwise.
    generator = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randint(-3, 4, shape, generator=generator).float()


def gentle_maker(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=generator) * 0.3


def expected_delta(down: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """Independent formula: contract r between up (out, r) and down (r, in, kh, kw) by einsum."""
    up2 = up.reshape(up.shape[0], RANK)
    down4 = down.reshape(RANK, weight.shape[1], *(weight.shape[2:] or (1, 1)))
    return torch.einsum("or,rikl->oikl", up2, down4).reshape(weight.shape) * scale


def snapshot(model) -> dict[str, torch.Tensor]:
    return {
        **{f"unet.{k}": v.clone() for k, v in model.unet.state_dict().items()},
        **{f"te.{k}": v.clone() for k, v in model.text_encoder.state_dict().items()},
    }


def assert_same_weights(model, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


def test_load_lora_file_groups_modules(model, tmp_path):
    write_lora(model, tmp_path / "style.safetensors", integer_maker())
    lora = load_lora_file(tmp_path / "style.safetensors")
    assert lora.name == "style"
    assert set(lora.modules) == {key for key, *_ in LAYERS}
    assert lora.metadata == {"ss_network_dim": "2"}
    ff = lora.modules["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj"]
    assert (ff.rank, ff.alpha, ff.scale) == (2, None, 1.0)
    assert lora.modules["lora_unet_down_blocks_0_attentions_0_proj_in"].scale == 2.0


def test_patch_is_exact_delta_and_restores_bitwise(model, tmp_path):
    tensors = write_lora(model, tmp_path / "exact.safetensors", integer_maker())
    lora = load_lora_file(tmp_path / "exact.safetensors")
    before = snapshot(model)
    te_mult, unet_mult = 0.25, 0.5
    with applied_lora(model, lora, te_multiplier=te_mult, unet_multiplier=unet_mult):
        for key, module_path, part, _, alpha in LAYERS:
            original = before[f"{part}.{module_path}.weight"]
            scale = (alpha if alpha is not None else RANK) / RANK * (te_mult if part == "te" else unet_mult)
            delta = expected_delta(
                tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"], original, scale
            )
            assert delta.abs().max() > 0
            assert torch.equal(_layer(model, module_path, part).weight, original + delta), key
        untouched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        assert torch.equal(model.unet.get_submodule(untouched[:-7]).weight, before[f"unet.{untouched}"])
    assert_same_weights(model, before)


def test_multipliers_apply_per_part(model, tmp_path):
    write_lora(model, tmp_path / "parts.safetensors", integer_maker())
    lora = load_lora_file(tmp_path / "parts.safetensors")
    before = snapshot(model)
    q_proj = "encoder.layers.0.self_attn.q_proj"
    conv = "down_blocks.0.resnets.0.conv1"
    with applied_lora(model, lora, te_multiplier=0.0, unet_multiplier=1.0):
        assert torch.equal(_layer(model, q_proj, "te").weight, before[f"te.{q_proj}.weight"])
        assert not torch.equal(_layer(model, conv, "unet").weight, before[f"unet.{conv}.weight"])
    assert_same_weights(model, before)


def test_restores_weights_after_an_exception(model, tmp_path):
    write_lora(model, tmp_path / "boom.safetensors", integer_maker())
    lora = load_lora_file(tmp_path / "boom.safetensors")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), applied_lora(model, lora, 1.0, 1.0):
        raise RuntimeError("boom")
    assert_same_weights(model, before)


def test_unmatched_keys_warn_once_and_the_rest_applies(model, tmp_path):
    junk = {"lora_unet_no_such_layer.lora_down.weight": torch.ones(2, 4),
            "lora_unet_no_such_layer.lora_up.weight": torch.ones(4, 2)}  # fmt: skip
    write_lora(model, tmp_path / "partial.safetensors", integer_maker(), extra=junk)
    lora = load_lora_file(tmp_path / "partial.safetensors")
    with pytest.warns(UserWarning, match=r"couldn't find 1 of 7 layers.*lora_unet_no_such_layer"):
        with applied_lora(model, lora, 1.0, 1.0):
            pass


def test_incomplete_loha_layers_are_refused_with_the_file_name(tmp_path):
    path = tmp_path / "loha_style.safetensors"
    save_file(
        {"lora_unet_conv_in.hada_w1_a": torch.ones(4, 2), "lora_unet_conv_in.alpha": torch.tensor(1.0)},
        str(path),
    )
    with pytest.raises(ValueError, match=r"loha_style\.safetensors: layer lora_unet_conv_in: .*hada_w1_b"):
        load_lora_file(path)


def test_shape_mismatch_names_the_layer(model, tmp_path):
    key = "lora_unet_down_blocks_0_resnets_0_conv1"
    path = tmp_path / "wrong.safetensors"
    save_file(
        {f"{key}.lora_down.weight": torch.ones(2, 7, 3, 3), f"{key}.lora_up.weight": torch.ones(32, 2, 1, 1)},
        str(path),
    )
    before = snapshot(model)
    with pytest.raises(LoraFormatError, match="down_blocks_0_resnets_0_conv1"):
        with applied_lora(model, load_lora_file(path), 1.0, 1.0):
            pass
    assert_same_weights(model, before)


class OldLayoutEncoder(nn.Module):
    """transformers < 5 nested the CLIP layers under `text_model`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.text_model = inner


def test_text_encoder_key_spellings(model):
    q_proj = model.text_encoder.get_submodule("encoder.layers.0.self_attn.q_proj")
    keys = lora_key_map(model)
    for key in ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_te1_encoder_layers_0_self_attn_q_proj",
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"):  # fmt: skip
        assert keys[key] == (q_proj, "te")
    old = SimpleNamespace(unet=model.unet, text_encoder=OldLayoutEncoder(model.text_encoder))
    assert lora_key_map(old)["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] == (q_proj, "te")
    assert "lora_te_text_model_text_model_encoder_layers_0_self_attn_q_proj" not in lora_key_map(old)


def test_weight_zero_renders_the_base_image_and_weight_one_changes_it(model, tmp_path):
    write_lora(model, tmp_path / "gentle.safetensors", gentle_maker())
    lora = load_lora_file(tmp_path / "gentle.safetensors")
    base = np.asarray(txt2img(model, "a red circle", seed=3, **FAST))
    with applied_lora(model, lora, 0.0, 0.0):
        off = np.asarray(txt2img(model, "a red circle", seed=3, **FAST))
    with applied_lora(model, lora, 1.0, 1.0):
        on = np.asarray(txt2img(model, "a red circle", seed=3, **FAST))
    assert np.array_equal(off, base)
    assert not np.array_equal(on, base)
    assert np.array_equal(np.asarray(txt2img(model, "a red circle", seed=3, **FAST)), base)


def test_render_lora_grid_writes_images_grid_and_infotext(model, tmp_path):
    lora_path = tmp_path / "my_style.safetensors"
    write_lora(model, lora_path, gentle_maker())
    result = render_lora_grid(
        model, lora_path, prompts=["a red circle"], weights=[0.0, 0.5], negative_prompt="blurry", seeds=[1, 2],
        clip_skip=1, out_dir=tmp_path / "grid", model_name="tiny", **FAST,
    )  # fmt: skip
    assert result.grid_path == tmp_path / "grid" / "grid.png"
    assert [len(row) for row in result.image_paths] == [2, 2]
    first = Image.open(result.image_paths[0][0])
    base = txt2img(model, "a red circle", negative_prompt="blurry", seed=1, **FAST)
    # The grid renders its cells in batches: equal to the single image up to float rounding.
    assert np.abs(np.asarray(first, dtype=int) - np.asarray(base, dtype=int)).max() <= 1
    text = Image.open(result.image_paths[1][1]).text["parameters"]
    assert text.startswith(
        "a red circle <lora:my_style:0.5>\nNegative prompt: blurry\nSteps: 3, Sampler: Euler"
    )
    assert "Seed: 2, Size: 64x64, Model: tiny" in text
    assert 'Lora hashes: "my_style: ' in text
    grid = Image.open(result.grid_path)
    assert grid.text["parameters"] == first.text["parameters"]
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    assert sorted(p.name for p in (tmp_path / "grid").iterdir() if p.name.startswith(".")) == []


def test_locon_file_patch_matches_the_trained_adapters_and_restores_bitwise(model, tmp_path):
    """A file from our trainer with 3x3 conv layers (stride 2 in the downsampler) patches to the same UNet
    and text-encoder outputs that the peft adapters it was saved from give."""
    cfg = TrainConfig(network=NetworkConfig(dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5))
    trained = build_tiny(seed=0)  # the same weights as `model`
    trained.freeze()
    network = LoRANetwork(trained, cfg.network)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in network.layers:
            layer.up.weight.copy_(torch.randn(layer.up.weight.shape, generator=generator) * 0.05)
    facts = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}
    path = save_lora(tmp_path / "locon.safetensors", network.state_dict(), lora_metadata(cfg, facts))
    lora = load_lora_file(path)
    assert lora.modules["lora_unet_down_blocks_0_downsamplers_0_conv"].down.shape[2:] == (3, 3)

    latents = torch.randn(2, 4, 8, 8, generator=generator)
    states = torch.randn(2, 77, 32, generator=generator)
    timesteps = torch.tensor([10, 500])
    ids = model.tokenizer(["sls star", "red circle"], padding="max_length", max_length=77,
                          return_tensors="pt").input_ids  # fmt: skip
    before = snapshot(model)
    with torch.no_grad():
        adapted = (trained.unet(latents, timesteps, states).sample, trained.text_encoder(ids)[0])
        base = (model.unet(latents, timesteps, states).sample, model.text_encoder(ids)[0])
        with applied_lora(model, lora, te_multiplier=1.0, unet_multiplier=1.0):
            patched = (model.unet(latents, timesteps, states).sample, model.text_encoder(ids)[0])
    for ours, theirs, original in zip(adapted, patched, base, strict=True):
        assert (ours - theirs).abs().max().item() <= 1e-4
        assert (ours - original).abs().max().item() > 1e-3
    assert_same_weights(model, before)
