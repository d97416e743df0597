"""LyCORIS LoHa and LoKr layers patched into the tiny model: exact deltas, exact restoration, mixed files.

The expected changes are rebuilt here from the definitions (sums of outer products, Tucker cores per kernel
position, Kronecker blocks), not with the engine's code. Integer factors keep every product exact in fp32, so
patched weights are compared bitwise.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from inference.extra_networks import parse_prompt
from inference.loha import LohaModule
from inference.lokr import LokrModule
from inference.lora import LoraFormatError, applied_lora, load_lora_file
from inference.models.tiny import build_tiny
from inference.prompt_loras import applied_loras, resolve_loras

R = 2
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0"


def kohya_key(path: str, part: str) -> str:
    return ("lora_unet_" if part == "unet" else "lora_te_text_model_") + path.replace(".", "_")


@pytest.fixture(scope="module")
def model():
    return build_tiny(seed=0)


@pytest.fixture()
def ints():
    generator = torch.Generator().manual_seed(0)
    return lambda *shape: torch.randint(-3, 4, shape, generator=generator).float()


def weight_of(model, path: str, part: str) -> torch.Tensor:
    return (model.unet if part == "unet" else model.text_encoder).get_submodule(path).weight


def snapshot(model) -> dict[str, torch.Tensor]:
    return {
        **{f"unet.{k}": v.clone() for k, v in model.unet.state_dict().items()},
        **{f"te.{k}": v.clone() for k, v in model.text_encoder.state_dict().items()},
    }


def assert_restored(model, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []


# --- the reference formulas, written from the definitions -------------------------------------------------


def outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (out, r) @ b (r, n) as a sum of r outer products."""
    b = b.reshape(b.shape[0], -1)
    return sum(torch.outer(a[:, k], b[k]) for k in range(a.shape[1]))


def tucker(t: torch.Tensor, w_a: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
    """W[:, :, k, l] = w_a.T @ t[:, :, k, l] @ w_b for every kernel position."""
    out = torch.zeros(w_a.shape[1], w_b.shape[1], *t.shape[2:])
    for k in range(t.shape[2]):
        for m in range(t.shape[3]):
            out[:, :, k, m] = w_a.T @ t[:, :, k, m] @ w_b
    return out


def kron_blocks(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Block (a, c) of the result is w1[a, c] * w2; a 4-D w2 keeps its kernel axes."""
    o2, i2 = w2.shape[:2]
    out = torch.zeros(w1.shape[0] * o2, w1.shape[1] * i2, *w2.shape[2:])
    for a in range(w1.shape[0]):
        for c in range(w1.shape[1]):
            out[a * o2 : (a + 1) * o2, c * i2 : (c + 1) * i2] = w1[a, c] * w2
    return out


# --- layers of each kind: (module path, part, tensors, expected unscaled change, scale) -----------------------


def loha_layers(ints) -> list[tuple[str, str, dict, torch.Tensor, float]]:
    layers = []
    for path, part, shape, alpha in [
        (f"{ATTN}.attn1.to_q", "unet", (32, 32), 1.0),
        ("down_blocks.0.resnets.0.conv1", "unet", (32, 32, 3, 3), 4.0),
        ("down_blocks.0.attentions.0.proj_in", "unet", (32, 32, 1, 1), None),
        ("encoder.layers.0.self_attn.q_proj", "te", (32, 32), 0.5),
    ]:
        t = {f"hada_w{i}_{ab}": ints(*dims) for i in "12" for ab, dims in (("a", (shape[0], R)),
             ("b", (R, torch.Size(shape[1:]).numel())))}  # fmt: skip
        change = outer_sum(t["hada_w1_a"], t["hada_w1_b"]) * outer_sum(t["hada_w2_a"], t["hada_w2_b"])
        if alpha is not None:
            t["alpha"] = torch.tensor(alpha)
        layers.append((path, part, t, change.reshape(shape), 1.0 if alpha is None else alpha / R))
    # Tucker on a 3x3 conv: a, b are (r, out) / (r, in), the cores (r, r, 3, 3).
    t = {f"hada_t{i}": ints(R, R, 3, 3) for i in "12"}
    t.update({f"hada_w{i}_{ab}": ints(R, 32) for i in "12" for ab in "ab"})
    t["alpha"] = torch.tensor(1.0)
    change = tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"]) * tucker(
        t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"]
    )
    layers.append(("down_blocks.0.downsamplers.0.conv", "unet", t, change, 0.5))
    return layers


def lokr_layers(ints) -> list[tuple[str, str, dict, torch.Tensor, float]]:
    w = {"w1": ints(4, 4), "w2": ints(8, 8)}  # both full: alpha is ignored
    ff = {"w1": ints(4, 2), "w2_a": ints(64, R), "w2_b": ints(R, 16)}
    conv_in = {"w1": ints(2, 2), "w2": ints(16, 2, 3, 3)}
    tucker_conv = {"w1_a": ints(4, R), "w1_b": ints(R, 8), "t2": ints(R, R, 3, 3), "w2_a": ints(R, 8),
                   "w2_b": ints(R, 12)}  # fmt: skip
    low_conv = {"w1": ints(2, 4), "w2_a": ints(16, R), "w2_b": ints(R, 8 * 9)}
    fc1 = {"w1": ints(8, 4), "w2": ints(8, 8)}
    w1_tucker = outer_sum(tucker_conv["w1_a"], tucker_conv["w1_b"])
    w2_tucker = tucker(tucker_conv["t2"], tucker_conv["w2_a"], tucker_conv["w2_b"])
    specs = [
        (f"{ATTN}.attn1.to_out.0", "unet", w, 8.0, kron_blocks(w["w1"], w["w2"]), 1.0),
        (f"{ATTN}.ff.net.0.proj", "unet", ff, 1.0, kron_blocks(ff["w1"], outer_sum(ff["w2_a"], ff["w2_b"])), 0.5),
        ("conv_in", "unet", conv_in, None, kron_blocks(conv_in["w1"], conv_in["w2"]), 1.0),
        ("up_blocks.1.resnets.0.conv1", "unet", tucker_conv, 1.0, kron_blocks(w1_tucker, w2_tucker), 0.5),
        ("down_blocks.0.resnets.0.conv2", "unet", low_conv, 3.0,
         kron_blocks(low_conv["w1"], outer_sum(low_conv["w2_a"], low_conv["w2_b"])), 1.5),
        ("encoder.layers.1.mlp.fc1", "te", fc1, 0.5, kron_blocks(fc1["w1"], fc1["w2"]), 1.0),
    ]  # fmt: skip
    layers = []
    for path, part, tensors, alpha, change, scale in specs:
        t = {f"lokr_{name}": value for name, value in tensors.items()}
        if alpha is not None:
            t["alpha"] = torch.tensor(alpha)
        layers.append((path, part, t, change, scale))
    return layers


def lora_layers(ints) -> list[tuple[str, str, dict, torch.Tensor, float]]:
    down, up = ints(R, 32), ints(32, R)
    t = {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(1.0)}
    return [(f"{ATTN}.attn2.to_v", "unet", t, outer_sum(up, down), 0.5)]


def write(path, layers) -> None:
    tensors = {f"{kohya_key(p, part)}.{name}": v for p, part, t, _, _ in layers for name, v in t.items()}
    save_file(tensors, str(path))


def check_patch(model, lora, layers, te: float, unet: float) -> None:
    """Inside the patch each layer's weight is original + multiplier * scale * change; restored after."""
    before = snapshot(model)
    with applied_lora(model, lora, te_multiplier=te, unet_multiplier=unet):
        for path, part, _, change, scale in layers:
            original = before[f"{part}.{path}.weight"]
            expected = original + change.reshape(original.shape) * ((te if part == "te" else unet) * scale)
            assert change.abs().max() > 0
            assert torch.equal(weight_of(model, path, part), expected), path
    assert_restored(model, before)


@pytest.mark.parametrize(
    ("family", "make_layers", "module_type", "te", "unet"),
    [("loha", loha_layers, LohaModule, 0.25, 0.75), ("lokr", lokr_layers, LokrModule, 0.5, 1.0)],
)
def test_lycoris_layers_patch_exactly_and_restore_bitwise(
    model, tmp_path, ints, family, make_layers, module_type, te, unet
):
    layers = make_layers(ints)
    write(tmp_path / f"{family}.safetensors", layers)
    lora = load_lora_file(tmp_path / f"{family}.safetensors")
    assert all(isinstance(module, module_type) for module in lora.modules.values())
    check_patch(model, lora, layers, te=te, unet=unet)


def test_scales_follow_a1111(ints):
    full = LokrModule(w1=ints(4, 4), w2=ints(8, 8), alpha=torch.tensor(8.0))
    low = LokrModule(w1_a=ints(4, 3), w1_b=ints(3, 4), w2=ints(8, 8), alpha=torch.tensor(1.5))
    both = LokrModule(
        w1_a=ints(4, 3), w1_b=ints(3, 4), w2_a=ints(8, 2), w2_b=ints(2, 8), alpha=torch.tensor(1.0)
    )
    assert (full.rank, full.scale) == (None, 1.0)
    assert (low.rank, low.scale) == (3, 0.5)
    assert (both.rank, both.scale) == (2, 0.5)  # lokr_w2_b's rank wins
    loha = LohaModule(ints(8, 4), ints(4, 8), ints(8, 4), ints(4, 8))
    assert (loha.rank, loha.scale) == (4, 1.0)


def test_mixed_file_from_a_prompt_tag(model, tmp_path, ints):
    layers = lora_layers(ints) + loha_layers(ints) + lokr_layers(ints)
    write(tmp_path / "mixed.safetensors", layers)
    text, networks = parse_prompt("a red circle <lora:mixed:0.5:0.25>")
    assert text == "a red circle "
    [prompt_lora] = resolve_loras(networks["lora"], tmp_path)
    kinds = {type(m).__name__ for m in prompt_lora.weights.modules.values()}
    assert kinds == {"LoraModule", "LohaModule", "LokrModule"}
    before = snapshot(model)
    with applied_loras(model, [prompt_lora]):
        for path, part, _, change, scale in layers:
            original = before[f"{part}.{path}.weight"]
            expected = original + change.reshape(original.shape) * ((0.5 if part == "te" else 0.25) * scale)
            assert torch.equal(weight_of(model, path, part), expected), path
    assert_restored(model, before)


def test_loha_shapes_that_do_not_fit_name_the_file_and_layer(model, tmp_path, ints):
    layers = loha_layers(ints)
    key = kohya_key("down_blocks.0.resnets.0.conv1", "unet")
    tensors = {f"{kohya_key(p, part)}.{n}": v for p, part, t, _, _ in layers for n, v in t.items()}
    tensors[f"{key}.hada_w2_b"] = ints(R, 7 * 9)  # `in` of 7 on a 32-channel conv
    save_file(tensors, str(tmp_path / "bad_loha.safetensors"))
    lora = load_lora_file(tmp_path / "bad_loha.safetensors")
    before = snapshot(model)
    pattern = r"bad_loha\.safetensors: lora_unet_down_blocks_0_resnets_0_conv1: LoHa hada_w2_a / hada_w2_b"
    with pytest.raises(LoraFormatError, match=pattern + r".*\(32, 63\).*\(32, 32, 3, 3\)"):
        with applied_lora(model, lora, 1.0, 1.0):
            pass
    assert_restored(model, before)  # layers patched before the bad one are undone


def test_lokr_kron_that_does_not_fit_is_refused(model, tmp_path, ints):
    key = kohya_key("conv_in", "unet")
    save_file(
        {f"{key}.lokr_w1": ints(2, 2), f"{key}.lokr_w2": ints(16, 3, 3, 3)}, str(tmp_path / "k.safetensors")
    )
    with pytest.raises(
        LoraFormatError, match=r"lora_unet_conv_in: LoKr kron.*\(32, 6, 3, 3\).*\(32, 4, 3, 3\)"
    ):
        with applied_lora(model, load_lora_file(tmp_path / "k.safetensors"), 1.0, 1.0):
            pass


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"alpha": (), "dora_scale": (1, 32)}, r"has only alpha and dora_scale tensors"),
        ({"hada_w1_a": (32, 2), "lora_down.weight": (2, 32)}, r"has LoHa and LoRA tensors"),
        ({"lokr_w1": (4, 4), "lokr_w2_a": (8, 2)}, r"LoKr \(without lokr_w2\) layer has no lokr_w2_b"),
        ({"alpha": ()}, r"has only alpha tensors"),
    ],
)  # fmt: skip
def test_unreadable_layers_name_the_file(tmp_path, tensors, message):
    path = tmp_path / "odd.safetensors"
    save_file({f"lora_unet_conv_in.{name}": torch.ones(shape) for name, shape in tensors.items()}, str(path))
    with pytest.raises(LoraFormatError, match=r"odd\.safetensors: layer lora_unet_conv_in\b.*" + message):
        load_lora_file(path)
