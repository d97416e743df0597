"""kohya SDXL LoRA names on our diffusers SDXL: `lora_unet_` in the original layout, `lora_te1_`, `lora_te2_`."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import save_file

from inference.lora import applied_lora, load_lora_file, lora_key_map
from inference.lora_sgm_names import sgm_names
from inference.models.tiny import build_tiny
from inference.models.tiny_sdxl import build_tiny_sdxl
from inference.txt2img import GenerationParams, sample_latents


@pytest.fixture(scope="module")
def model():
    bundle = build_tiny_sdxl(seed=0)
    bundle.freeze()
    return bundle


def _sdxl_shaped_unet() -> UNet2DConditionModel:
    """SDXL base's block pattern (3 levels, no attention at the top, 1/2/... transformer layers) at tiny widths."""
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16, 16), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
        transformer_layers_per_block=(1, 2, 3), projection_class_embeddings_input_dim=6 * 4 + 8,
        cross_attention_dim=16, norm_num_groups=4,
    )  # fmt: skip


@pytest.mark.parametrize(
    "build", [lambda: build_tiny(0).unet, lambda: build_tiny_sdxl(0).unet, _sdxl_shaped_unet]
)
def test_original_layout_names_invert_diffusers_own_conversion(build):
    # Every weight renamed to its original-layout path and converted back by diffusers' single-file
    # converter lands on the very parameter it came from.
    unet = build()
    names = sgm_names(unet)
    state = unet.state_dict()
    ldm = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        ldm[f"model.diffusion_model.{names[module]}.{param}"] = value
    converted = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k].reshape(state[k].shape), state[k]) for k in state)


KOHYA_SDXL = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "lora_unet_middle_block_1_proj_in": "mid_block.attentions.0.proj_in",
    "lora_unet_output_blocks_2_0_in_layers_2": "up_blocks.0.resnets.2.conv1",
    "lora_unet_input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
    "lora_unet_output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
}  # fmt: skip


def test_kohya_sdxl_names_find_the_diffusers_modules(model):
    keys = lora_key_map(model)
    modules = dict(model.unet.named_modules())
    for kohya, path in KOHYA_SDXL.items():
        assert keys[kohya] == (modules[path], "unet"), kohya
    # transformers 5's CLIPTextModel has no `text_model` level; CLIPTextModelWithProjection still has one
    q_1, q_2 = (
        getattr(encoder, "text_model", encoder).get_submodule("encoder.layers.0.self_attn.q_proj")
        for encoder in (model.text_encoder, model.text_encoder_2)
    )
    assert keys["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == (q_1, "te")
    assert keys["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"] == (q_2, "te")
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" not in lora_key_map(build_tiny(0))


def _lora_tensors(name: str, weight: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out_features, in_features = weight.shape[0], weight[0].numel()
    return {
        f"{name}.lora_down.weight": torch.randn(2, in_features, generator=generator).reshape(
            2, *weight.shape[1:]
        ),
        f"{name}.lora_up.weight": torch.randn(
            out_features, 2, *[1] * (weight.dim() - 2), generator=generator
        ),
        f"{name}.alpha": torch.tensor(1.0),
    }


def test_a_kohya_sdxl_file_patches_both_encoders_and_the_unet(model, tmp_path):
    keys = lora_key_map(model)
    names = [
        *KOHYA_SDXL,
        "lora_te1_text_model_encoder_layers_1_mlp_fc1",
        "lora_te2_text_model_encoder_layers_1_mlp_fc1",
    ]
    tensors = {}
    for seed, name in enumerate(names):
        tensors.update(_lora_tensors(name, keys[name][0].weight, seed))
    save_file(tensors, tmp_path / "xl.safetensors")
    lora = load_lora_file(tmp_path / "xl.safetensors")
    params = GenerationParams("a red circle", "blurry", 3, 2, 6.0, 64, 64)
    originals = {name: keys[name][0].weight.clone() for name in names}
    with torch.no_grad():
        plain = sample_latents(model, [params])
        with applied_lora(model, lora, 1.0, 1.0):
            changed = [name for name in names if not torch.equal(keys[name][0].weight, originals[name])]
            patched = sample_latents(model, [params])
        restored = sample_latents(model, [params])
    assert changed == names
    assert (patched - plain).abs().max() > 1e-4
    assert torch.equal(restored, plain)


def test_a_lora_of_the_other_family_is_one_clear_error(model, tmp_path):
    """An SDXL LoRA on an SD 1.x model (and the reverse) names the families, from ss_base_model_version or,
    without it, from the text-encoder keys; a UNet-only file without metadata is left to the layer check."""
    from inference.lora import LoraFormatError, LoraWeights, check_lora_family, lora_family

    sd = build_tiny(seed=0)
    te1 = {"lora_te1_text_model_encoder_layers_0_mlp_fc1": None}
    cases = [
        (LoraWeights("a", te1), "SDXL"),
        (LoraWeights("b", {"lora_te_text_model_encoder_layers_0_mlp_fc1": None}), "SD 1.x/2.x"),
        (LoraWeights("c", {"lora_unet_x": None}, {"ss_base_model_version": "sdxl_base_v1-0"}), "SDXL"),
        (LoraWeights("d", te1, {"ss_base_model_version": "sd_v1"}), "SD 1.x/2.x"),  # the metadata wins
        (LoraWeights("e", {"lora_unet_x": None}), None),
    ]
    for lora, family in cases:
        assert lora_family(lora) == family
        for target, its_family in ((sd, "SD 1.x/2.x"), (model, "SDXL")):
            if family in (None, its_family):
                check_lora_family(target, lora)
                continue
            with pytest.raises(
                LoraFormatError, match=f"^LoRA {lora.name} was trained for {family}, but this"
            ):
                check_lora_family(target, lora)
