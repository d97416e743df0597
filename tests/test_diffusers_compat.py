"""Our LoRA and LoCon files load in diffusers' `load_lora_weights` and give the same outputs as our own
adapters."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline

from inference.models.tiny import build_tiny
from train.config import NetworkConfig, TrainConfig
from train.network.lora import LoRANetwork
from train.network.lora_file import lora_metadata, save_lora

FACTS = {"steps": 1, "epoch": 1, "num_epochs": 1, "max_train_steps": 1, "num_batches_per_epoch": 1}


def _trained_like_network(cfg: TrainConfig):
    """A tiny model with a LoRA whose up-weights are non-zero, as after some training."""
    bundle = build_tiny(seed=0)
    bundle.freeze()
    network = LoRANetwork(bundle, cfg.network)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in network.layers:
            weight = layer.up.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    bundle.unet.eval()
    bundle.text_encoder.eval()
    return bundle, network


def _pipeline():
    base = build_tiny(seed=0)
    return StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        scheduler=base.noise_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# Scales that differ from 1 must survive the round trip; LoCon's 3x3 convs get their own rank and alpha.
NETWORKS = {
    "lora": NetworkConfig(dim=4, alpha=2.0),
    "locon": NetworkConfig(dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5),
}


@pytest.mark.parametrize("network_cfg", NETWORKS.values(), ids=NETWORKS.keys())
def test_diffusers_load_lora_weights_matches_our_adapters(tmp_path, network_cfg):
    cfg = TrainConfig(network=network_cfg)
    bundle, network = _trained_like_network(cfg)
    tensors = network.state_dict()
    path = save_lora(tmp_path / "ours.safetensors", tensors, lora_metadata(cfg, FACTS))
    downs = [t for key, t in tensors.items() if key.endswith("lora_down.weight")]
    assert any(t.shape[2:] == (3, 3) for t in downs) == (network_cfg.conv_dim > 0)

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    states = torch.randn(2, 77, 32, generator=generator)
    timesteps = torch.tensor([10, 500])
    ids = bundle.tokenizer(
        ["sls toy, blue background", "red circle"],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        ours_unet = bundle.unet(latents, timesteps, states).sample
        ours_te = bundle.text_encoder(ids)[0]

    pipe = _pipeline()
    with torch.no_grad():
        base_unet = pipe.unet(latents, timesteps, states).sample
        base_te = pipe.text_encoder(ids)[0]
    pipe.load_lora_weights(str(path), adapter_name="lorasmith_test")
    with torch.no_grad():
        theirs_unet = pipe.unet(latents, timesteps, states).sample
        theirs_te = pipe.text_encoder(ids)[0]

    diffusers_layers = [m for m in pipe.unet.modules() if hasattr(m, "lora_A")]
    assert len(diffusers_layers) == len(network.unet_layers)  # no LoCon layer was dropped on load
    assert (theirs_unet - ours_unet).abs().max().item() <= 1e-4
    assert (theirs_te - ours_te).abs().max().item() <= 1e-4
    assert (theirs_unet - base_unet).abs().max().item() > 1e-3
    assert (theirs_te - base_te).abs().max().item() > 1e-3
