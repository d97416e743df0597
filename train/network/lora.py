"""LoRA adapters on the UNet and text encoder, injected through peft, read out in kohya's layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig
from train.network.base import AdaptedParts
from train.network.blocks import block_args, block_index, block_lr_weights, target_ranks, uses_conv_targets
from train.network.dropouts import Dropouts, install_dropouts
from train.network.lora_file import network_args, save_lora
from train.network.targets import Target, encoder_targets, unet_targets

ADAPTER = "lorasmith"


@dataclass
class AdaptedLayer:
    """A peft LoRA layer and the kohya name it is saved under."""

    target: Target
    layer: nn.Module
    owner: nn.Module  # the model (UNet or text encoder) the layer lives in

    @property
    def down(self) -> nn.Module:
        return self.layer.lora_A[ADAPTER]

    @property
    def up(self) -> nn.Module:
        return self.layer.lora_B[ADAPTER]

    @property
    def alpha(self) -> float:
        """The alpha peft trains this layer with (its scale is alpha / rank), as saved in `.alpha`."""
        return float(self.layer.lora_alpha[ADAPTER])


def _lora_config(targets: list[Target], cfg: NetworkConfig) -> LoraConfig:
    """One peft config for all targets; layers whose rank or alpha differ from dim / alpha (3x3 convs at
    conv_dim / conv_alpha, kohya's block_dims) get theirs through per-module patterns.

    peft matches pattern keys as regular expressions against the end of a module path, so the full paths
    are escaped: each pattern then names exactly one layer.
    """
    ranks = target_ranks(targets, cfg)
    own = {path: rank for path, rank in ranks.items() if rank != (cfg.dim, cfg.alpha)}
    return LoraConfig(
        r=cfg.dim,
        lora_alpha=cfg.alpha,
        lora_dropout=0.0,  # kohya drops the down projection's output instead (dropouts.py)
        target_modules=[t.path for t in targets],
        rank_pattern={re.escape(path): dim for path, (dim, _) in own.items()},
        alpha_pattern={re.escape(path): alpha for path, (_, alpha) in own.items()},
        init_lora_weights=True,  # kohya's init: Kaiming-uniform down, zero up
    )


def _inject(model: nn.Module, targets: list[Target], cfg: NetworkConfig) -> list[AdaptedLayer]:
    ranks = target_ranks(targets, cfg)
    targets = [t for t in targets if ranks[t.path][0] > 0]  # a block of rank 0 gets no adapter (kohya)
    if not targets:
        return []
    inject_adapter_in_model(_lora_config(targets, cfg), model, adapter_name=ADAPTER)
    modules = dict(model.named_modules())
    return [AdaptedLayer(t, modules[t.path], model) for t in targets]


class LoRANetwork(AdaptedParts):
    """The trainable LoRA of one run: scale = alpha / dim (3x3 convs: conv_alpha / conv_dim), up-weights 0."""

    file_format = "lora"
    caption_ids = None  # captions tokenise as the tokenizer reads them

    def __init__(self, bundle: ModelBundle, cfg: NetworkConfig):
        self.cfg = cfg
        conv = uses_conv_targets(cfg)
        wanted = unet_targets(bundle.unet, conv=conv, sdxl=bundle.is_sdxl) if cfg.train_unet else []
        self.unet_layers = _inject(bundle.unet, wanted, cfg)
        self.text_encoder_layers = []
        if cfg.train_text_encoder:
            for encoder, targets in encoder_targets(bundle):
                self.text_encoder_layers += _inject(encoder, targets, cfg)
        dropouts = Dropouts(cfg.dropout, cfg.rank_dropout, cfg.module_dropout)
        for layer in self.layers:
            for param in (*layer.down.parameters(), *layer.up.parameters()):
                param.requires_grad_(True)
            layer.down.train()  # dropouts apply in training mode (the frozen base stays in eval mode)
            install_dropouts(layer.down, dropouts)

    def write_file(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """One kohya-layout `.safetensors` file."""
        return save_lora(path, tensors, metadata)

    def header(self) -> dict:
        """kohya's networks.lora, with its network_args (conv_dim, dropouts, LoRA+) as the header records them."""
        return {
            "ss_network_module": "networks.lora",
            "ss_network_args": network_args(self.cfg) | block_args(self.cfg),
        }

    @staticmethod
    def _params(layers: list[AdaptedLayer]) -> list[nn.Parameter]:
        return [p for layer in layers for p in (*layer.down.parameters(), *layer.up.parameters())]

    def parameters(self) -> list[nn.Parameter]:
        """Every trained weight (text encoder first, then UNet)."""
        return self._params(self.layers)

    def param_groups(
        self, unet_lr: float, text_encoder_lr: float, text_encoder_2_lr: float | None = None
    ) -> list[dict]:
        """Optimizer groups; a group whose learning rate is 0 is left out (frozen), as in kohya. With block
        lr weights each UNet block is a group at lr x its weight (`unet_block05`); with LoRA+ a group's
        up-weights get a group of their own at lr x ratio (`<name>_plus`). SDXL's second text encoder
        trains at `text_encoder_2_lr` when given (AdaptedParts.encoder_parts)."""
        unet_ratio, te_ratio = self.cfg.loraplus_ratios
        parts = [(*part, te_ratio) for part in self.encoder_parts(text_encoder_lr, text_encoder_2_lr)]
        weights = block_lr_weights(self.cfg)
        if weights is None:
            parts.append(("unet", self.unet_layers, unet_lr, unet_ratio))
        else:
            for index, weight in enumerate(weights):
                layers = [
                    layer for layer in self.unet_layers if block_index(layer.target.kohya_name) == index
                ]
                parts.append((f"unet_block{index:02d}", layers, unet_lr * weight, unet_ratio))
            outside = [layer for layer in self.unet_layers if block_index(layer.target.kohya_name) < 0]
            parts.append(("unet", outside, unet_lr, unet_ratio))
        groups = []
        for name, layers, lr, ratio in parts:
            if not (layers and lr):
                continue
            if ratio is None:
                groups.append({"params": self._params(layers), "lr": lr, "name": name})
                continue
            ups = [p for layer in layers for p in layer.up.parameters()]
            up_ids = {id(p) for p in ups}
            rest = [p for p in self._params(layers) if id(p) not in up_ids]  # downs (and DoRA's magnitudes)
            groups.append({"params": rest, "lr": lr, "name": name})
            groups.append({"params": ups, "lr": lr * ratio, "name": f"{name}_plus"})
        return groups

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Weights in kohya's key layout: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha`.

        down: (r, in) for Linear, (r, in, k, k) for convs; up: (out, r) or (out, r, 1, 1).
        """
        tensors: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            name = layer.target.kohya_name
            tensors[f"{name}.lora_down.weight"] = layer.down.weight.detach().to("cpu", dtype).contiguous()
            tensors[f"{name}.lora_up.weight"] = layer.up.weight.detach().to("cpu", dtype).contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(layer.alpha, dtype=dtype)
        return tensors

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trained weights exactly as they are (dtype included), on the CPU: what a resume state keeps."""
        tensors: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            name = layer.target.kohya_name
            tensors[f"{name}.lora_down.weight"] = layer.down.weight.detach().to("cpu", copy=True)
            tensors[f"{name}.lora_up.weight"] = layer.up.weight.detach().to("cpu", copy=True)
        return tensors

    def load_trainable_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights saved by `trainable_tensors` back in, bit for bit (shapes were checked by the caller)."""
        with torch.no_grad():
            for layer in self.layers:
                name = layer.target.kohya_name
                layer.down.weight.copy_(tensors[f"{name}.lora_down.weight"])
                layer.up.weight.copy_(tensors[f"{name}.lora_up.weight"])

    def shape_signature(self) -> str:
        """A digest of every trained tensor's name, shape and dtype: a state fits only an equal network."""
        import hashlib

        digest = hashlib.sha256()
        for layer in self.layers:
            for part, module in (("down", layer.down), ("up", layer.up)):
                weight = module.weight
                digest.update(
                    f"{layer.target.kohya_name}.{part}{tuple(weight.shape)}{weight.dtype};".encode()
                )
        return digest.hexdigest()[:16]

    def remove(self) -> None:
        """Put the original layers back: the base model is as loaded, the LoRA lives on in saved files."""
        for adapted in self.layers:
            parent_path, _, child = adapted.target.path.rpartition(".")
            parent = adapted.owner.get_submodule(parent_path) if parent_path else adapted.owner
            setattr(parent, child, adapted.layer.get_base_layer())
        self.unet_layers, self.text_encoder_layers = [], []
