"""What LoHa and LoKr share: the layers they adapt, their optimizer groups, file, header and resume tensors.

They train the same layers as our LoRA (targets.py: kohya's names, so A1111, ComfyUI and Forge find them):
Linear and 1x1 layers at dim / alpha, and with conv_dim > 0 the 3x3 convolutions of the resnets and
resamplers at conv_dim / conv_alpha. Each adapted layer becomes a DeltaLayer around the frozen original;
`remove()` puts the originals back. A subclass says only how one layer's factors look (`make_delta`) and
which LyCORIS `algo` it is.

The file is what LyCORIS's kohya wrapper (`ss_network_module` = lycoris.kohya) writes: per layer the
factors under their LyCORIS names and `alpha`. diffusers' SD 1.5 `load_lora_weights` does not read LoHa
or LoKr keys (it raises "keys have not been correctly renamed"); A1111, ComfyUI, Forge and our engine do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig
from train.network.base import AdaptedParts
from train.network.delta_layer import DeltaLayer, WeightDelta
from train.network.lora_file import save_lora
from train.network.targets import Target, encoder_targets, unet_targets


@dataclass
class WrappedLayer:
    """A DeltaLayer and the kohya name its factors are saved under."""

    target: Target
    layer: DeltaLayer
    owner: nn.Module  # the model (UNet or text encoder) the layer lives in

    @property
    def delta(self) -> WeightDelta:
        return self.layer.delta


def _replace(owner: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(owner.get_submodule(parent_path) if parent_path else owner, child, module)


class LycorisNetwork(AdaptedParts):
    """The trainable LyCORIS network of one run; subclasses give `algo` and `make_delta`."""

    algo = ""
    file_format = "lora"  # the engine's LoRA loader reads LyCORIS layers
    caption_ids = None  # captions tokenise as the tokenizer reads them

    def __init__(self, bundle: ModelBundle, cfg: NetworkConfig):
        self.cfg = cfg
        conv = cfg.conv_dim > 0
        wanted = unet_targets(bundle.unet, conv=conv, sdxl=bundle.is_sdxl) if cfg.train_unet else []
        self.unet_layers = self._wrap(bundle.unet, wanted)
        self.text_encoder_layers = []
        if cfg.train_text_encoder:
            for encoder, targets in encoder_targets(bundle):
                self.text_encoder_layers += self._wrap(encoder, targets)

    def make_delta(self, shape: tuple[int, ...], dim: int, alpha: float) -> WeightDelta:
        """The factors of one layer whose weight is `shape`, initialised as LyCORIS does."""
        raise NotImplementedError

    def _wrap(self, model: nn.Module, targets: list[Target]) -> list[WrappedLayer]:
        cfg, layers = self.cfg, []
        for target in targets:
            base = model.get_submodule(target.path)
            dim, alpha = (cfg.conv_dim, cfg.resolved_conv_alpha) if target.spatial else (cfg.dim, cfg.alpha)
            delta = self.make_delta(tuple(base.weight.shape), dim, alpha)
            layer = DeltaLayer(base, delta, cfg.rank_dropout, cfg.module_dropout)
            layer.train()  # the dropouts apply in training mode
            _replace(model, target.path, layer)
            layers.append(WrappedLayer(target, layer, model))
        return layers

    @staticmethod
    def _params(layers: list[WrappedLayer]) -> list[nn.Parameter]:
        return [p for layer in layers for p in layer.delta.parameters()]

    def parameters(self) -> list[nn.Parameter]:
        """Every trained factor (text encoder first, then UNet)."""
        return self._params(self.layers)

    def param_groups(
        self, unet_lr: float, text_encoder_lr: float, text_encoder_2_lr: float | None = None
    ) -> list[dict]:
        """One group per trained part; a part whose learning rate is 0 is left out (frozen), as in kohya.
        SDXL's second text encoder trains at `text_encoder_2_lr` when given (AdaptedParts.encoder_parts)."""
        parts = [*self.encoder_parts(text_encoder_lr, text_encoder_2_lr), ("unet", self.unet_layers, unet_lr)]
        return [
            {"params": self._params(layers), "lr": lr, "name": name}
            for name, layers, lr in parts
            if layers and lr
        ]

    def header(self) -> dict:
        """LyCORIS's kohya module, with its network_args as strings (as kohya records `--network_args`)."""
        return {"ss_network_module": "lycoris.kohya", "ss_network_args": self.network_args()}

    def network_args(self) -> dict[str, str]:
        """`algo`, the conv rank, the dropouts and Tucker when in use; subclasses add their own."""
        cfg = self.cfg
        args = {"algo": self.algo}
        if cfg.conv_dim:
            args |= {"conv_dim": str(cfg.conv_dim), "conv_alpha": str(float(cfg.resolved_conv_alpha))}
        for key in ("rank_dropout", "module_dropout"):
            if getattr(cfg, key):
                args[key] = str(getattr(cfg, key))
        if cfg.use_tucker:
            args["use_tucker"] = "True"
        return args

    def write_file(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """One kohya-layout `.safetensors` file with LyCORIS keys."""
        return save_lora(path, tensors, metadata)

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Per layer `<name>.<factor>` (hada_w1_a, lokr_w1, …) and `<name>.alpha`, on the CPU in `dtype`."""
        tensors: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            name = layer.target.kohya_name
            for key, param in layer.delta.named_parameters():
                tensors[f"{name}.{key}"] = param.detach().to("cpu", dtype).contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(layer.delta.alpha, dtype=dtype)
        return tensors

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trained factors exactly as they are (dtype included), on the CPU: what a resume state keeps."""
        return {
            f"{layer.target.kohya_name}.{key}": param.detach().to("cpu", copy=True)
            for layer in self.layers
            for key, param in layer.delta.named_parameters()
        }

    def load_trainable_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy factors saved by `trainable_tensors` back in, bit for bit (shapes were checked by the caller)."""
        with torch.no_grad():
            for layer in self.layers:
                for key, param in layer.delta.named_parameters():
                    param.copy_(tensors[f"{layer.target.kohya_name}.{key}"])

    def shape_signature(self) -> str:
        """A digest of every trained tensor's name, shape and dtype: a state fits only an equal network."""
        digest = hashlib.sha256()
        for layer in self.layers:
            for key, param in layer.delta.named_parameters():
                digest.update(f"{layer.target.kohya_name}.{key}{tuple(param.shape)}{param.dtype};".encode())
        return digest.hexdigest()[:16]

    def remove(self) -> None:
        """Put the original layers back: the base model is as loaded, the training lives on in saved files."""
        for wrapped in self.layers:
            _replace(wrapped.owner, wrapped.target.path, wrapped.layer.base)
        self.unet_layers, self.text_encoder_layers = [], []
