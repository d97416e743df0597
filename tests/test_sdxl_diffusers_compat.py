"""Our SDXL LoRA and LoCon files load in diffusers' StableDiffusionXLPipeline.load_lora_weights and give the
same UNet and text-encoder outputs (both encoders) as our own adapters (issue 19)."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from inference.models.tiny_sdxl import TEXT_WIDTH, TIME_EMBED, build_tiny_sdxl
from train.config import NetworkConfig, TrainConfig
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, model_facts, save_lora

FACTS = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}


def _trained_like_network(cfg: TrainConfig):
    """Tiny SDXL with a LoRA whose up-weights are non-zero, as after some training."""
    bundle = build_tiny_sdxl(seed=0)
    bundle.freeze()
    network = LoRANetwork(bundle, cfg.network)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in network.layers:
            weight = layer.up.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    for model in (bundle.unet, bundle.text_encoder, bundle.text_encoder_2):
        model.eval()
    return bundle, network


def _pipeline() -> StableDiffusionXLPipeline:
    base = build_tiny_sdxl(seed=0)
    return StableDiffusionXLPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        text_encoder_2=base.text_encoder_2,
        tokenizer=base.tokenizer,
        tokenizer_2=base.tokenizer_2,
        unet=base.unet,
        scheduler=base.noise_scheduler,
    )


def _outputs(unet, text_encoder, text_encoder_2, ids) -> tuple[torch.Tensor, ...]:
    """UNet noise prediction with SDXL's added conditioning, and both encoders' last states (+ pooled)."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    states = torch.randn(2, 77, 2 * TEXT_WIDTH, generator=generator)
    added = {
        "text_embeds": torch.randn(2, TEXT_WIDTH, generator=generator),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64], [48, 64, 8, 0, 64, 64]]),
    }
    assert TIME_EMBED * 6 + TEXT_WIDTH == unet.config.projection_class_embeddings_input_dim
    with torch.no_grad():
        noise = unet(latents, torch.tensor([10, 500]), states, added_cond_kwargs=added).sample
        first = text_encoder(ids)[0]
        second = text_encoder_2(ids)
    return noise, first, second[0], second.text_embeds


# Scales that differ from 1 must survive the round trip; LoCon's 3x3 convs get their own rank and alpha.
NETWORKS = {
    "lora": NetworkConfig(dim=4, alpha=2.0),
    "locon": NetworkConfig(dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5),
}


@pytest.mark.parametrize("network_cfg", NETWORKS.values(), ids=NETWORKS.keys())
def test_diffusers_sdxl_load_lora_weights_matches_our_adapters(tmp_path, network_cfg):
    cfg = TrainConfig(network=network_cfg)
    bundle, network = _trained_like_network(cfg)
    tensors = network.state_dict()
    facts = FACTS | model_facts(bundle) | {"network": network.header()}
    path = save_lora(tmp_path / "ours.safetensors", tensors, lora_metadata(cfg, facts))
    assert any(key.startswith("lora_unet_input_blocks_") for key in tensors)
    assert any(key.startswith("lora_te1_") for key in tensors) and any(
        key.startswith("lora_te2_") for key in tensors
    )

    ids = bundle.tokenizer(
        ["sls toy, blue background", "red circle"], padding="max_length", max_length=77, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    ours = _outputs(bundle.unet, bundle.text_encoder, bundle.text_encoder_2, ids)
    pipe = _pipeline()
    base = _outputs(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, ids)
    pipe.load_lora_weights(str(path), adapter_name="lorasmith_test")
    theirs = _outputs(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, ids)

    def adapted(model) -> int:
        return sum(hasattr(module, "lora_A") for module in model.modules())

    assert adapted(pipe.unet) == len(network.unet_layers)  # no layer (LoCon's included) was dropped on load
    assert adapted(pipe.text_encoder) + adapted(pipe.text_encoder_2) == len(network.text_encoder_layers)
    for name, mine, their, plain in zip(
        ("unet", "te1", "te2", "te2 pooled"), ours, theirs, base, strict=True
    ):
        assert (their - mine).abs().max().item() <= 1e-4, name
        assert (their - plain).abs().max().item() > 1e-3, name
