"""`network=dora`: kohya/LyCORIS keys with `dora_scale`, a training-time forward that equals what ComfyUI
computes from the saved file, our engine loading it (any multiplier, both axes), and diffusers' fallback.
The users' path (`python -m train network=dora`, its eval render and exact resume) is in test_resume.py.

ComfyUI's formula is written out below from its definition, with loops instead of the engine's reshapes.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from inference.lora import LoraFormatError, applied_lora, load_lora_file
from inference.models.tiny import build_tiny
from tests.test_network_keys import FACTS, expected_text_encoder_names, expected_unet_names, sd15_skeleton
from train.config import NetworkConfig, TrainConfig
from train.network.dora import DoRANetwork
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

EPS = torch.finfo(torch.float32).eps


def comfy_weight(weight, change, dora_scale, strength=1.0):
    """ComfyUI's weight_decompose: W' = (W + ΔW) * m / (norm + eps), then W + strength * (W' - W).

    A magnitude with one entry per output row takes the norm of each row of the *original* W; one with an
    entry per input channel the norm of each input column of the merged W + ΔW (kernel included).
    """
    merged = weight + change
    if dora_scale.shape[0] == weight.shape[0]:
        norms = torch.stack([weight[o].norm() for o in range(weight.shape[0])])
        norms = norms.reshape(-1, *[1] * (weight.dim() - 1))
    else:
        norms = torch.stack([merged[:, i].norm() for i in range(weight.shape[1])])
        norms = norms.reshape(1, -1, *[1] * (weight.dim() - 2))
    decomposed = merged * dora_scale / (norms + EPS)
    return weight + strength * (decomposed - weight)


def lora_change(down, up, alpha):
    """alpha / r * up @ down as a sum of r outer products, shaped like the weight (down holds the kernel)."""
    rank = down.shape[0]
    flat = sum(torch.outer(up.reshape(up.shape[0], rank)[:, k], down[k].reshape(-1)) for k in range(rank))
    return flat.reshape(up.shape[0], *down.shape[1:]) * (alpha / rank)


def column_norms(weight):
    return torch.stack([weight[:, i].norm() for i in range(weight.shape[1])])


# --- keys on SD 1.5 -----------------------------------------------------------------------------------------


def test_sd15_dora_file_has_kohya_keys_and_input_axis_magnitudes(tmp_path):
    bundle = sd15_skeleton()
    ff = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2"  # (1280, 5120)
    weight = bundle.unet.get_submodule("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2").weight
    weight.data.fill_(0.01)  # the skeleton's memory is uninitialised; a magnitude is its weight's norms
    cfg = TrainConfig(network=NetworkConfig(module="dora", dim=4, alpha=1.0))
    network = DoRANetwork(bundle, cfg.network)
    path = save_lora(
        tmp_path / "dora.safetensors",
        network.state_dict(torch.float16),
        lora_metadata(cfg, FACTS | {"network": network.header()}),
    )

    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = f.metadata()
    names = {key.split(".")[0] for key in tensors}
    assert names == expected_unet_names() | expected_text_encoder_names()  # 192 + 72
    assert len(tensors) == 4 * 264
    for name in names:
        down, magnitude = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.dora_scale"]
        assert magnitude.dtype == torch.float16
        assert tuple(magnitude.shape) == (1, down.shape[1], *[1] * (down.dim() - 2)), name  # input axis
    proj_in = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert tuple(tensors[f"{proj_in}.dora_scale"].shape) == (1, 320, 1, 1)  # a 1x1 conv
    to_k = "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k"
    assert tuple(tensors[f"{to_k}.dora_scale"].shape) == (1, 768)
    # Each magnitude starts at its input channel's norm: 0.01 * sqrt(out) for this Linear.
    assert tuple(tensors[f"{ff}.dora_scale"].shape) == (1, 5120)
    assert torch.allclose(tensors[f"{ff}.dora_scale"].float(), torch.tensor(0.01 * 1280**0.5), rtol=1e-3)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    args = json.loads(metadata["ss_network_args"])
    assert args == {"algo": "lora", "dora_wd": "True", "wd_on_output": "False"}


def test_dora_preset_composes(compose_config):
    net = compose_config("network=dora", "dataset.train_dir=x").network
    assert (net.module, net.dim, net.alpha, net.conv_dim) == ("dora", 8, 4.0, 0)


# --- training-time forward == ComfyUI's formula on the saved file ---------------------------------------------


def _inputs(bundle):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    ids = bundle.tokenizer(
        ["sls toy, blue background", "red circle"], padding="longest", return_tensors="pt"
    ).input_ids
    return latents, torch.tensor([10, 500]), ids


def _outputs(bundle, inputs):
    latents, timesteps, ids = inputs
    states = bundle.text_encoder(ids)[0]
    return bundle.unet(latents, timesteps, states).sample, states


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with LoCon-DoRA (alpha != rank on both kinds), its base outputs, and 3 AdamW steps."""
    bundle = build_tiny(seed=0)
    bundle.freeze()
    inputs = _inputs(bundle)
    with torch.no_grad():
        base = _outputs(bundle, inputs)
    cfg = TrainConfig(network=NetworkConfig(module="dora", dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0))
    network = DoRANetwork(bundle, cfg.network)
    with torch.no_grad():
        at_init = _outputs(bundle, inputs)
    optimizer = torch.optim.AdamW(network.param_groups(1e-2, 1e-2))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        target = torch.randn(base[0].shape, generator=generator)
        loss = torch.nn.functional.mse_loss(_outputs(bundle, inputs)[0], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = _outputs(bundle, inputs)
    path = save_lora(tmp_path_factory.mktemp("dora") / "dora.safetensors", network.state_dict(), {})
    where = {layer.target.kohya_name: (layer.owner, layer.target.path) for layer in network.layers}
    initial_norms = {  # the base weights' input-channel norms, which the magnitudes started from
        layer.target.kohya_name: column_norms(layer.layer.get_base_layer().weight) for layer in network.layers
    }
    network.remove()
    return bundle, inputs, base, at_init, after, path, where, initial_norms


def test_at_init_dora_gives_the_base_models_outputs(trained):
    _, _, base, at_init, *_ = trained
    assert _max_diff(at_init, base) < 1e-5  # only eps / norm (1e-7 relative) apart


def test_trained_outputs_equal_engine_and_comfyui_patches_of_the_file(trained):
    bundle, inputs, base, _, after, path, where, initial_norms = trained
    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    # The training moved every kind of weight: ups left zero, magnitudes left the base norms.
    assert _max_diff(after, base) > 1e-2
    conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv1}.lora_up.weight"].any() and tensors[f"{conv1}.alpha"].item() == 3.0
    moved = [
        (tensors[f"{n}.dora_scale"].flatten() - norms).abs().max() > 1e-3
        for n, norms in initial_norms.items()
    ]
    assert sum(moved) > 0.9 * len(moved)  # a few time_emb_proj layers of the random tiny UNet get ~0 gradient

    with torch.no_grad():
        assert _max_diff(_outputs(bundle, inputs), base) == 0  # remove() gave the base model back
        with applied_lora(bundle, load_lora_file(path), 1.0, 1.0):
            engine = _outputs(bundle, inputs)
        originals = {}
        for name, (owner, module_path) in where.items():
            weight = owner.get_submodule(module_path).weight
            originals[name] = weight.clone()
            change = lora_change(
                tensors[f"{name}.lora_down.weight"],
                tensors[f"{name}.lora_up.weight"],
                tensors[f"{name}.alpha"],
            )
            weight.copy_(comfy_weight(weight, change, tensors[f"{name}.dora_scale"]))
        comfy = _outputs(bundle, inputs)
        for name, (owner, module_path) in where.items():
            owner.get_submodule(module_path).weight.copy_(originals[name])
    assert _max_diff(engine, after) <= 1e-4
    assert _max_diff(comfy, after) <= 1e-4


def test_diffusers_loads_the_file_as_plain_lora_without_magnitudes(trained, caplog):
    from diffusers import StableDiffusionPipeline

    bundle, inputs, base, _, after, path, *_ = trained
    with safe_open(str(path), framework="pt") as f:
        plain = {key: f.get_tensor(key) for key in f.keys() if not key.endswith(".dora_scale")}
    plain_path = path.with_name("plain.safetensors")
    save_file(plain, str(plain_path))
    pipe_model = build_tiny(seed=0)
    pipe = StableDiffusionPipeline(
        vae=pipe_model.vae, text_encoder=pipe_model.text_encoder, tokenizer=pipe_model.tokenizer,
        unet=pipe_model.unet, scheduler=pipe_model.noise_scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        pipe.load_lora_weights(str(path), adapter_name="dora")
    assert any("dora" in record.getMessage().lower() for record in caplog.records)
    with torch.no_grad():
        theirs = _outputs(pipe_model, inputs)
        with applied_lora(bundle, load_lora_file(plain_path), 1.0, 1.0):
            as_plain_lora = _outputs(bundle, inputs)
    assert _max_diff(theirs, as_plain_lora) <= 1e-4  # the low-rank pairs load exactly
    assert _max_diff(theirs, after) > 1e-3  # but without the magnitudes it is not what was trained


# --- the engine: both axes, any multiplier, LoHa with a magnitude ---------------------------------------------

LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"  # (32, 128): out != in
CONV = "down_blocks.1.resnets.0.conv1"  # (64, 32, 3, 3)


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


def _key(path):
    return "lora_unet_" + path.replace(".", "_")


@pytest.mark.parametrize("path", [LINEAR, CONV])
@pytest.mark.parametrize("axis", ["input", "output"])
@pytest.mark.parametrize("multiplier", [1.0, 0.6, -0.5])
def test_engine_applies_dora_scale_as_comfyui(model, tmp_path, path, axis, multiplier):
    weight = model.unet.get_submodule(path).weight
    before = weight.detach().clone()
    generator = torch.Generator().manual_seed(2)
    rank, kernel = 3, weight.shape[2:]
    down = torch.randn(rank, weight.shape[1], *kernel, generator=generator)
    up = torch.randn(weight.shape[0], rank, *[1] * len(kernel), generator=generator) * 0.1
    magnitude_shape = (1, weight.shape[1]) if axis == "input" else (weight.shape[0], 1)
    magnitude = torch.rand(*magnitude_shape, *[1] * len(kernel), generator=generator) + 0.5
    key = _key(path)
    tensors = {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up}
    tensors |= {f"{key}.alpha": torch.tensor(1.5), f"{key}.dora_scale": magnitude}
    save_file(tensors, str(tmp_path / "d.safetensors"))
    expected = comfy_weight(before, lora_change(down, up, 1.5), magnitude, multiplier)
    with torch.no_grad(), applied_lora(model, load_lora_file(tmp_path / "d.safetensors"), 0.0, multiplier):
        assert (weight - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
        assert (weight - before).abs().max().item() > 1e-2
    assert torch.equal(weight, before)


def test_engine_applies_dora_scale_to_a_loha_layer(model, tmp_path):
    weight = model.unet.get_submodule(LINEAR).weight
    before = weight.detach().clone()
    generator = torch.Generator().manual_seed(4)
    w1_a, w2_a = torch.randn(2, 32, 2, generator=generator)
    w1_b, w2_b = torch.randn(2, 2, 128, generator=generator)
    magnitude = torch.rand(1, 128, generator=generator) + 0.5
    key = _key(LINEAR)
    names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "dora_scale")
    tensors = dict(zip([f"{key}.{n}" for n in names], (w1_a, w1_b, w2_a, w2_b, magnitude), strict=True))
    save_file(tensors, str(tmp_path / "h.safetensors"))
    change = (w1_a @ w1_b) * (w2_a @ w2_b)  # no alpha: scale 1
    expected = comfy_weight(before, change, magnitude)
    with torch.no_grad(), applied_lora(model, load_lora_file(tmp_path / "h.safetensors"), 1.0, 1.0):
        assert (weight - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_a_dora_scale_that_fits_no_axis_names_the_layer(model, tmp_path):
    key = _key(LINEAR)
    tensors = {f"{key}.lora_down.weight": torch.ones(2, 128), f"{key}.lora_up.weight": torch.ones(32, 2)}
    tensors[f"{key}.dora_scale"] = torch.ones(1, 32)  # an output width, laid out on the input axis
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    message = rf"bad\.safetensors: {key}: dora_scale \(1, 32\) fits neither"
    with warnings.catch_warnings(), pytest.raises(LoraFormatError, match=message):
        with applied_lora(model, load_lora_file(tmp_path / "bad.safetensors"), 1.0, 1.0):
            pass


def test_magnitudes_are_trained_resumable_tensors_at_their_parts_lr():
    bundle = build_tiny(seed=0)
    lora = LoRANetwork(bundle, NetworkConfig(dim=4))
    lora_signature = lora.shape_signature()
    lora.remove()
    network = DoRANetwork(bundle, NetworkConfig(module="dora", dim=4, loraplus_lr_ratio=16.0))
    magnitudes = {id(network.magnitude(layer)) for layer in network.unet_layers}
    groups = {group["name"]: group for group in network.param_groups(1e-4, 1e-5)}
    assert magnitudes <= {id(p) for p in groups["unet"]["params"]}  # LoRA+ speeds up only the ups
    assert not magnitudes & {id(p) for p in groups["unet_plus"]["params"]}
    assert {id(p) for p in network.parameters()} >= magnitudes

    saved = network.trainable_tensors()
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"
    assert tuple(saved[key].shape) == (1, 32, 1, 1)
    changed = {name: tensor + 1 for name, tensor in saved.items()}
    network.load_trainable_tensors(changed)
    assert all(torch.equal(network.trainable_tensors()[name], changed[name]) for name in saved)
    assert network.shape_signature() != lora_signature  # a LoRA state never resumes a DoRA run


def test_lycoris_dora_wd_from_kohya_converts_to_network_dora(compose_config):
    from train.kohya_config import convert

    conversion = convert({"network_module": "lycoris.kohya", "network_args": ["algo=lora", "dora_wd=True"]})
    cfg = compose_config("dataset.train_dir=x", *conversion.overrides)
    assert cfg.network.module == "dora"
    assert [item.split(":")[0] for item in conversion.lacking] == [
        "network_args wd_on_output=True"
    ]  # its default
    explicit = convert({"network_args": "algo=lora dora_wd=True wd_on_output=False"})
    assert (explicit.settings, explicit.lacking) == ([("network.module", "dora")], [])
