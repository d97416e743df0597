"""DoRA: LoRA with a trained magnitude per input channel, saved as the `dora_scale` ComfyUI and Forge read.

Each adapted layer trains LoRA's down/up pair and a magnitude m (1, in[, 1, 1]), started at the base weight's
per-input-channel norm. The layer computes with

    W' = (W + scale * up @ down) * m / (‖W + scale * up @ down‖ + eps)

where the norm runs over the output rows and kernel of each input channel and eps is fp32's machine epsilon:
exactly what ComfyUI and Forge apply at strength 1 for a `dora_scale` of that shape (inference/dora.py);
A1111 applies the same without eps.
The input axis is the one they all agree on; on the output axis ComfyUI normalises the base weight rather than
the merged one, unlike LyCORIS and peft's `use_dora`, so a file of that form would not reload as trained.

A per-input-channel factor can be applied to the layer's input instead of its weight (padding zeros stay
zeros), so the layer runs as LoRA on x * m / ‖·‖; W + ΔW is built only for its norm, outside the gradient
graph (input_scale). kohya users know this network as
`--network_module lycoris.kohya --network_args algo=lora dora_wd=True wd_on_output=False`. The dropouts act
on the down projection's output as with LoRA; module_dropout drops the low-rank change, not the magnitudes.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig
from train.network.blocks import block_args
from train.network.lora import ADAPTER, AdaptedLayer, LoRANetwork
from train.network.lora_file import network_args

MAGNITUDE = "dora_scale"  # the parameter's name on each peft layer, and its key in the file
EPS = torch.finfo(torch.float32).eps


def input_channel_norms(weight: Tensor) -> Tensor:
    """The norm of each input channel over the output rows and kernel: (out, in[, k, k]) → (1, in[, 1, 1])."""
    return torch.linalg.vector_norm(weight, dim=[0, *range(2, weight.dim())], keepdim=True)


def merged_weight(adapted: AdaptedLayer) -> Tensor:
    """W + scale * up @ down in fp32, shaped like the base weight."""
    base = adapted.layer.get_base_layer().weight
    up, down = adapted.up.weight, adapted.down.weight
    change = up.reshape(up.shape[0], -1).float() @ down.reshape(down.shape[0], -1).float()
    return base.float() + adapted.layer.scaling[ADAPTER] * change.reshape(base.shape)


def input_scale(adapted: AdaptedLayer) -> Tensor:
    """m / (‖W + ΔW‖ + eps) per input channel, in fp32: (1, in) for a Linear, (1, in, 1, 1) for a conv.

    The norm is a constant to the backward pass, as the DoRA paper (its section 4.3) and peft make it: the
    values are the same, but no merged weight is kept for the gradient, which saves its memory and time.
    """
    magnitude = getattr(adapted.layer, MAGNITUDE)
    with torch.no_grad(), torch.autocast(magnitude.device.type, enabled=False):
        norms = input_channel_norms(merged_weight(adapted)) + EPS
    return magnitude.float() / norms


def install_decomposition(adapted: AdaptedLayer) -> nn.Parameter:
    """Give the layer its magnitude (the base weight's input-channel norms) and scale its input by it."""
    base = adapted.layer.get_base_layer().weight.detach()
    magnitude = nn.Parameter(input_channel_norms(base.float()))
    adapted.layer.register_parameter(MAGNITUDE, magnitude)
    spatial = isinstance(adapted.layer.get_base_layer(), nn.Conv2d)

    def scale_input(module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        factor = input_scale(adapted)
        return (x * (factor if spatial else factor.reshape(-1)).to(x.dtype), *rest)

    adapted.layer.register_forward_pre_hook(scale_input)
    return magnitude


class DoRANetwork(LoRANetwork):
    """LoRA's layers, ranks and alphas (conv_dim included), each with a trained magnitude (module docstring)."""

    def __init__(self, bundle: ModelBundle, cfg: NetworkConfig):
        super().__init__(bundle, cfg)
        for adapted in self.layers:
            install_decomposition(adapted)

    def header(self) -> dict:
        """LyCORIS' kohya module with algo=lora and dora_wd, on the input axis (not its default)."""
        args = {"algo": "lora", "dora_wd": "True", "wd_on_output": "False", **network_args(self.cfg)}
        args |= block_args(self.cfg)  # kohya's block-wise options work as for LoRA
        return {"ss_network_module": "lycoris.kohya", "ss_network_args": args}

    @staticmethod
    def magnitude(adapted: AdaptedLayer) -> nn.Parameter:
        return getattr(adapted.layer, MAGNITUDE)

    @staticmethod
    def _params(layers: list[AdaptedLayer]) -> list[nn.Parameter]:
        """Each layer's down, up and magnitude; LoRA+ (LoRANetwork.param_groups) speeds up only the ups."""
        return [p for layer in layers for p in (*LoRANetwork._params([layer]), DoRANetwork.magnitude(layer))]

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """LoRA's keys plus `<name>.dora_scale`: (1, in) for a Linear, (1, in, 1, 1) for a conv."""
        tensors = super().state_dict(dtype)
        for layer in self.layers:
            key = f"{layer.target.kohya_name}.{MAGNITUDE}"
            tensors[key] = self.magnitude(layer).detach().to("cpu", dtype).contiguous()
        return tensors

    def trainable_tensors(self) -> dict[str, Tensor]:
        """LoRA's pairs and the magnitudes, exactly as they are, on the CPU."""
        tensors = super().trainable_tensors()
        for layer in self.layers:
            tensors[f"{layer.target.kohya_name}.{MAGNITUDE}"] = (
                self.magnitude(layer).detach().to("cpu", copy=True)
            )
        return tensors

    def load_trainable_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copy saved pairs and magnitudes back in, bit for bit."""
        super().load_trainable_tensors(tensors)
        with torch.no_grad():
            for layer in self.layers:
                self.magnitude(layer).copy_(tensors[f"{layer.target.kohya_name}.{MAGNITUDE}"])

    def shape_signature(self) -> str:
        """LoRA's signature extended by every magnitude's name, shape and dtype (a LoRA state never fits)."""
        digest = hashlib.sha256(super().shape_signature().encode())
        for layer in self.layers:
            magnitude = self.magnitude(layer)
            digest.update(
                f"{layer.target.kohya_name}.{MAGNITUDE}{tuple(magnitude.shape)}{magnitude.dtype};".encode()
            )
        return digest.hexdigest()[:16]
