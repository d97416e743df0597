"""LyCORIS LoHa and LoKr (network=loha / network=lokr): LyCORIS's keys and shapes on SD 1.5's layers, LoKr's
factorisation rules, the model as trained equal to the base model patched from the saved file by our engine,
the dropouts, and the settings that are refused. The run through `python -m train` (file, eval grid, exact
resume) is in test_resume.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from inference.lora import applied_lora, load_lora_file, parse_lora_state_dict
from inference.models.tiny import build_tiny
from tests.test_network_keys import (
    FACTS,
    expected_conv_modules,
    expected_text_encoder_names,
    expected_unet_names,
    sd15_skeleton,
)
from train.config import NetworkConfig, TrainConfig
from train.errors import ConfigError
from train.network.delta_layer import DeltaLayer
from train.network.loha import HadamardProduct, LohaDelta
from train.network.lokr import LokrDelta, factorization
from train.network.lora_file import lora_metadata, save_lora
from train.network.registry import build_network

LOHA_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha")
TO_K = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k"
TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
CONV1 = "lora_unet_up_blocks_1_resnets_0_conv1"  # 2560 -> 1280 channels, 3x3


@pytest.fixture(scope="module")
def skeleton():
    return sd15_skeleton()


def _save(tmp_path, network, cfg) -> tuple[dict[str, tuple[int, ...]], dict[str, str], Path]:
    """Write the network's file as a run does; returns {key: shape}, the header and the path."""
    path = save_lora(
        tmp_path / "net.safetensors",
        network.state_dict(),
        lora_metadata(cfg, FACTS | {"network": network.header()}),
    )
    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_tensor(key).shape) for key in f.keys()}, f.metadata(), path


def _fits_sd15(path, skeleton) -> None:
    """Our engine reads every layer and each change has the shape of SD 1.5's weight (else it raises)."""
    modules = load_lora_file(path).modules
    weights = {
        f"lora_unet_{p}".replace(".", "_"): m.weight
        for p, m in skeleton.unet.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }
    for name in (TO_K, TO_Q, CONV1, "lora_unet_down_blocks_0_attentions_0_proj_in"):
        assert modules[name].updown(weights[name].shape, torch.device("cpu")).shape == weights[name].shape


def test_sd15_loha_file_has_lycoris_keys_on_kohyas_modules(tmp_path, skeleton):
    cfg = TrainConfig(network=NetworkConfig(module="loha", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0))
    network = build_network(skeleton, cfg.network)
    try:
        shapes, metadata, path = _save(tmp_path, network, cfg)
    finally:
        network.remove()
    convs = expected_conv_modules(4, 2)
    names = {key.split(".")[0] for key in shapes}
    assert names == expected_unet_names() | expected_text_encoder_names() | set(convs)
    assert len(names) == 192 + 86 + 72 and len(shapes) == 5 * len(names)
    assert {f"{name}.{key}" for name in names for key in LOHA_KEYS} == set(shapes)
    for name, (down, up) in convs.items():  # LoHa's a/b take the places of LoRA's up/down
        for w in ("w1", "w2"):
            assert shapes[f"{name}.hada_{w}_a"] == up[:2] and shapes[f"{name}.hada_{w}_b"] == (
                down[0],
                math.prod(down[1:]),
            )
    assert shapes[f"{TO_K}.hada_w1_a"] == (320, 4) and shapes[f"{TO_K}.hada_w2_b"] == (4, 768)
    assert shapes["lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_b"] == (4, 320)  # a 1x1 conv
    assert shapes["lora_te_text_model_encoder_layers_11_mlp_fc1.hada_w1_a"] == (3072, 4)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"]) == {"algo": "loha", "conv_dim": "2", "conv_alpha": "1.0"}
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    _fits_sd15(path, skeleton)


def test_sd15_lokr_file_has_lycoris_keys_and_factors(tmp_path, skeleton):
    cfg = TrainConfig(network=NetworkConfig(module="lokr", dim=8, alpha=4.0, conv_dim=4, conv_alpha=1.0))
    network = build_network(skeleton, cfg.network)
    try:
        shapes, metadata, path = _save(tmp_path, network, cfg)
        to_q = next(layer for layer in network.layers if layer.target.kohya_name == TO_Q).delta
        assert not to_q.lokr_w2_b.any() and to_q.lokr_w1.any()  # the change starts at zero
    finally:
        network.remove()
    names = {key.split(".")[0] for key in shapes}
    assert names == expected_unet_names() | expected_text_encoder_names() | set(expected_conv_modules(8, 4))
    # 320 = 16 x 20 and 768 = 24 x 32: w1 holds the small sides, w2 = w2_a @ w2_b the large ones at rank 8
    assert {k: v for k, v in shapes.items() if k.startswith(f"{TO_K}.")} == {
        f"{TO_K}.lokr_w1": (16, 24),
        f"{TO_K}.lokr_w2_a": (20, 8),
        f"{TO_K}.lokr_w2_b": (8, 32),
        f"{TO_K}.alpha": (),
    }
    # 1280 = 32 x 40 out, 2560 = 40 x 64 in, at conv_dim 4 with the 3x3 kernel in w2_b
    assert shapes[f"{CONV1}.lokr_w1"] == (32, 40) and shapes[f"{CONV1}.lokr_w2_b"] == (4, 64 * 9)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"]) == {
        "algo": "lokr",
        "conv_dim": "4",
        "conv_alpha": "1.0",
        "factor": "-1",
    }
    _fits_sd15(path, skeleton)


def test_factorization_splits_as_lycoris():
    cases = {(320, -1): (16, 20), (768, -1): (24, 32), (1280, -1): (32, 40), (3072, -1): (48, 64)}
    cases |= {
        (320, 8): (8, 40),
        (128, 4): (4, 32),
        (250, 4): (2, 125),
        (127, -1): (1, 127),
        (64, 16): (4, 16),
    }
    assert {key: factorization(*key) for key in cases} == cases


def _factors(delta) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in delta.named_parameters()}


@pytest.mark.parametrize(
    ("shape", "settings", "factors", "alpha"),
    [
        ((320, 320), {"factor": 8}, {"lokr_w1": (8, 8), "lokr_w2_a": (40, 8), "lokr_w2_b": (8, 40)}, 4.0),
        ((320, 320), {"full_matrix": True}, {"lokr_w1": (16, 16), "lokr_w2": (20, 20)}, 8.0),
        ((320, 320, 3, 3), {"full_matrix": True}, {"lokr_w1": (16, 16), "lokr_w2": (20, 20, 3, 3)}, 8.0),
        ((320, 320), {"dim": 16}, {"lokr_w1": (16, 16), "lokr_w2": (20, 20)}, 16.0),  # 16 >= 20 / 2: full
        (
            (320, 768),
            {"dim": 4, "decompose_both": True},
            {"lokr_w1_a": (16, 4), "lokr_w1_b": (4, 24), "lokr_w2_a": (20, 4), "lokr_w2_b": (4, 32)},
            4.0,
        ),
        (
            (320, 320, 3, 3),
            {"use_tucker": True},
            {"lokr_w1": (16, 16), "lokr_t2": (8, 8, 3, 3), "lokr_w2_a": (8, 20), "lokr_w2_b": (8, 20)},
            4.0,
        ),
        (
            (320, 320, 1, 1),
            {"use_tucker": True},
            {"lokr_w1": (16, 16), "lokr_w2_a": (20, 8), "lokr_w2_b": (8, 20)},
            4.0,
        ),
    ],
    ids=[
        "factor8",
        "full_matrix",
        "full_matrix_conv",
        "rank_too_large",
        "decompose_both",
        "tucker",
        "tucker_1x1",
    ],
)
def test_lokr_factor_shapes_and_scale(shape, settings, factors, alpha):
    """Both factors full: LyCORIS records alpha = dim, so the scale is 1 whatever alpha was asked for."""
    settings = {"dim": 8, "alpha": 4.0} | settings
    delta = LokrDelta(shape, **settings)
    assert _factors(delta) == factors
    assert (delta.alpha, delta.scale) == (alpha, alpha / settings["dim"])
    with torch.no_grad():
        for param in delta.parameters():
            param.normal_()
        assert delta.weight_change().shape == shape


def test_loha_tucker_factors_only_on_larger_kernels():
    tucker = LohaDelta((320, 640, 3, 3), dim=4, alpha=1.0, use_tucker=True)
    assert _factors(tucker) == {
        "hada_t1": (4, 4, 3, 3),
        "hada_t2": (4, 4, 3, 3),
        "hada_w1_a": (4, 320),
        "hada_w1_b": (4, 640),
        "hada_w2_a": (4, 320),
        "hada_w2_b": (4, 640),
    }
    plain = LohaDelta((320, 640, 1, 1), dim=4, alpha=1.0, use_tucker=True)  # a 1x1 conv has no core
    assert _factors(plain)["hada_w1_b"] == (4, 640) and "hada_t1" not in _factors(plain)


# Each config trains every layer kind of the tiny model: attention and MLP Linears, 1x1 and 3x3 convs.
EQUAL_CASES = {
    "loha": NetworkConfig(module="loha", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0),
    "lokr": NetworkConfig(module="lokr", dim=2, alpha=4.0, conv_dim=2, conv_alpha=1.0),
    "lokr_full_decompose": NetworkConfig(module="lokr", dim=1, alpha=1.0, decompose_both=True, conv_dim=8),
    "loha_tucker": NetworkConfig(module="loha", dim=2, alpha=1.0, conv_dim=2, use_tucker=True),
    "lokr_tucker": NetworkConfig(module="lokr", dim=2, alpha=1.0, conv_dim=2, use_tucker=True),
}


@pytest.fixture(scope="module")
def tiny():
    bundle = build_tiny(seed=0)
    for model in (bundle.unet, bundle.text_encoder):
        model.requires_grad_(False)
    return bundle


def _outputs(bundle, ids, latents, timesteps) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        states = bundle.text_encoder(ids)[0]
        return states, bundle.unet(latents, timesteps, states).sample


@pytest.mark.parametrize("name", list(EQUAL_CASES))
def test_trained_model_equals_the_base_patched_from_the_saved_file(tmp_path, tiny, name):
    cfg = TrainConfig(network=EQUAL_CASES[name])
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, len(tiny.tokenizer), (2, 77), generator=generator)
    latents, timesteps = torch.randn(2, 4, 8, 8, generator=generator), torch.tensor([50, 700])
    base = _outputs(tiny, ids, latents, timesteps)
    torch.manual_seed(0)
    network = build_network(tiny, cfg.network)
    try:
        optimizer = torch.optim.AdamW(network.parameters(), lr=0.02)
        for _ in range(2):  # non-zero factors everywhere (LoHa's w2_a, LoKr's w2 start at zero)
            states = tiny.text_encoder(ids)[0]
            tiny.unet(latents, timesteps, states).sample.square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        trained = _outputs(tiny, ids, latents, timesteps)
        _, _, path = _save(tmp_path, network, cfg)
    finally:
        network.remove()
    assert _outputs(tiny, ids, latents, timesteps)[1].equal(base[1])  # remove() gave the base model back
    with applied_lora(tiny, load_lora_file(path), 1.0, 1.0):
        patched = _outputs(tiny, ids, latents, timesteps)
    for part in range(2):  # text-encoder states, then the UNet's prediction
        assert (trained[part] - base[part]).abs().max() > 1e-2  # the training changed the output
        assert torch.allclose(patched[part], trained[part], rtol=0, atol=1e-4)


def test_module_and_rank_dropout_act_in_training_only():
    torch.manual_seed(0)
    base = nn.Linear(6, 64, bias=False)
    delta = LohaDelta((64, 6), dim=2, alpha=2.0)
    nn.init.normal_(delta.hada_w2_a)
    x = torch.randn(3, 6)
    with torch.no_grad():
        plain, full = base(x), x @ (base.weight + delta.weight_change()).T
        rows = DeltaLayer(base, delta, rank_dropout=0.5, module_dropout=0.0)
        dropped = rows(x)
        kept = (dropped - full).abs().amax(0) < 1e-6
        skipped = (dropped - plain).abs().amax(0) < 1e-6
        assert bool((kept ^ skipped).all()) and 10 < int(kept.sum()) < 54  # whole output rows, about half
        assert torch.allclose(rows.eval()(x), full, atol=1e-6)  # evaluation: no dropout
        layer = DeltaLayer(base, delta, rank_dropout=0.0, module_dropout=0.5)
        outcomes = [bool(torch.allclose(layer(x), plain)) for _ in range(40)]
    assert 5 < sum(outcomes) < 35  # the whole change skipped on some calls, applied on the others


def test_presets_compose(compose_config):
    loha = compose_config("network=loha", "dataset.train_dir=x").network
    lokr = compose_config("network=lokr", "dataset.train_dir=x").network
    assert (loha.module, loha.dim, loha.alpha, loha.conv_dim) == ("loha", 8, 4.0, 0)
    assert (lokr.module, lokr.factor, lokr.decompose_both, lokr.full_matrix) == ("lokr", -1, False, False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["network=loha", "network.dropout=0.1"],
            "network.dropout=0.1 does not apply to network.module=loha",
        ),
        (["network=lokr", "+network.loraplus_lr_ratio=16"], "loraplus_lr_ratio=16.0 is LoRA\\+"),
        (["network=loha", "network.alpha=0"], "network.alpha=0.0 must be > 0 for network.module=loha"),
        (["+network.factor=8"], "network.factor=8 applies to network.module=lokr only"),
        (
            ["network=loha", "+network.full_matrix=true"],
            "network.full_matrix=True applies to network.module=lokr",
        ),
        (["network=lokr", "network.factor=0"], "network.factor=0 must be -1"),
        (
            ["network=loha", "network.use_tucker=true"],
            "use_tucker=true has no effect while network.conv_dim=0",
        ),
        (["+network.use_tucker=true"], "use_tucker=true applies to network.module=loha or lokr, not lora"),
        (
            ["network=lokr", "network.full_matrix=true", "network.decompose_both=true"],
            "decompose_both=true has no effect with network.full_matrix=true",
        ),
    ],
)
def test_settings_that_do_not_apply_are_refused(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config("dataset.train_dir=x", *overrides)


def test_a_state_dict_reads_back_as_lycoris_modules(tiny):
    """Our engine sorts the layers into its LoHa / LoKr families (A1111's `hada_` / `lokr_` prefixes)."""
    for module, family in (("loha", "LohaModule"), ("lokr", "LokrModule")):
        network = build_network(tiny, NetworkConfig(module=module, dim=2, alpha=1.0))
        try:
            modules = parse_lora_state_dict(network.state_dict())
        finally:
            network.remove()
        assert {type(m).__name__ for m in modules.values()} == {family}


def test_a_kohya_lycoris_config_converts_to_network_lokr(compose_config):
    from train.kohya_config import convert

    settings = {
        "network_module": "lycoris.kohya",
        "network_args": "algo=lokr factor=8 full_matrix=True conv_dim=4 conv_alpha=1 use_cp=True",
        "network_dim": 16,
        "network_alpha": 1,
    }
    conversion = convert(settings)
    assert not conversion.lacking
    net = compose_config("dataset.train_dir=x", *conversion.overrides).network
    assert (net.module, net.factor, net.full_matrix, net.conv_dim, net.dim) == ("lokr", 8, True, 4, 16)
    assert net.use_tucker


def test_loha_gradient_without_keeping_the_products_equals_autograds():
    """HadamardProduct recomputes the full-size products in the backward pass; the gradient is the same."""
    generator = torch.Generator().manual_seed(3)
    factors = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((7, 3), (3, 5)) * 2]
    upstream = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    grads = []
    for product in (HadamardProduct.apply, lambda a1, b1, a2, b2: (a1 @ b1) * (a2 @ b2)):
        leaves = [f.clone().requires_grad_(True) for f in factors]
        (product(*leaves) * upstream).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    for ours, reference in zip(*grads, strict=True):
        assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)
