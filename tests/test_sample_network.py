"""Samples render the live network at each weight exactly as the engine renders its saved file.

For every network type the trained weights are moved off their initial values (so the network changes the
picture), then the live render at weight w is compared with the engine loading the saved file at w (A1111's
`<lora:name:w>`, an embedding as `(trigger:w)`): the same latents to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from inference.embeddings import EmbeddingDatabase, load_embedding
from inference.lora import applied_lora, load_lora_file
from inference.models.tiny import build_tiny
from inference.txt2img import GenerationParams, sample_latents
from train.config import NetworkConfig
from train.network.registry import build_network
from train.sample_network import live_network

PROMPT = "sls toy, blue background"


def _params(prompt: str = PROMPT) -> GenerationParams:
    return GenerationParams(prompt, "red", 3, 3, 5.0, 32, 32, sampler="Euler")


def _latents(bundle, live=None, prompt: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        if live is None:
            return sample_latents(bundle, [_params(prompt)])
        with live.applied():
            return sample_latents(bundle, [_params(live.prompt_for(prompt))], live.embeddings)


def _moved(network) -> None:
    """Trained weights away from their start (LoRA's ups start at zero), the same for every run."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in network.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2 * (param.std() + 0.05))


# LoCon and LoKr share their layers' code with DoRA / LoRA and LoHa: the fast suite runs one of each kind.
NETWORKS = [
    pytest.param(NetworkConfig(module="lora", dim=4, alpha=2.0), id="lora"),
    pytest.param(
        NetworkConfig(module="lora", dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0),
        id="locon",
        marks=pytest.mark.slow,
    ),
    pytest.param(NetworkConfig(module="loha", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0), id="loha"),
    pytest.param(
        NetworkConfig(module="lokr", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0),
        id="lokr",
        marks=pytest.mark.slow,
    ),
    pytest.param(NetworkConfig(module="dora", dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0), id="dora"),
]


@pytest.mark.parametrize("cfg", NETWORKS)
def test_live_adapter_at_each_weight_equals_the_saved_file(cfg, tmp_path):
    bundle = build_tiny(seed=0)
    bundle.freeze()
    base = _latents(bundle)
    network = build_network(bundle, cfg)
    _moved(network)
    bundle.unet.eval(), bundle.text_encoder.eval()
    live = {w: _latents(bundle, live_network(network, bundle.tokenizer, "toy", w)) for w in (0.0, 0.5, 1.0)}
    assert live_network(network, bundle.tokenizer, "toy", 0.5).tag == "<lora:toy:0.5>"
    path = network.write_file(tmp_path / "toy.safetensors", network.state_dict(), {})
    network.remove()
    lora = load_lora_file(path)
    for weight in (0.5, 1.0):
        with applied_lora(bundle, lora, weight, weight):
            from_file = _latents(bundle)
        assert (live[weight] - from_file).abs().max() < 2e-4, weight
    assert (live[0.0] - base).abs().max() < 2e-4  # weight 0: the base model
    assert (live[1.0] - base).abs().mean() > 1e-2  # the network really changes the picture
    assert (live[0.5] - live[1.0]).abs().mean() > 3e-3


def test_live_embedding_at_each_strength_equals_the_saved_embedding(tmp_path):
    bundle = build_tiny(seed=0)
    bundle.freeze()
    network = build_network(
        bundle, NetworkConfig(module="embedding", token_string="sls", num_vectors_per_token=2)
    )
    _moved(network)
    live = {w: _latents(bundle, live_network(network, bundle.tokenizer, "sls", w)) for w in (0.0, 0.5, 1.0)}
    path = network.write_file(tmp_path / "sls.safetensors", network.state_dict(), {})
    network.remove()
    database = EmbeddingDatabase(bundle.tokenizer, bundle.text_encoder.config.hidden_size)
    database.add(load_embedding(path))
    with torch.no_grad():
        for weight, prompt in (
            (1.0, PROMPT),
            (0.5, "(sls:0.5) toy, blue background"),
            (0.0, "(sls:0) toy, blue background"),
        ):
            from_file = sample_latents(bundle, [_params(prompt)], database)
            assert (live[weight] - from_file).abs().max() < 2e-4, weight
    assert (live[1.0] - live[0.5]).abs().mean() > 1e-2


def test_a_full_fine_tune_renders_itself_and_refuses_other_weights():
    bundle = build_tiny(seed=0)
    bundle.freeze()
    base = _latents(bundle)
    network = build_network(bundle, NetworkConfig(module="full"))
    _moved(network)
    bundle.unet.eval(), bundle.text_encoder.eval()
    assert (_latents(bundle, live_network(network, bundle.tokenizer, "x", 1.0)) - base).abs().mean() > 1e-2
    with pytest.raises(ValueError, match="weight 1 only"):
        live_network(network, bundle.tokenizer, "x", 0.5)
