"""Kohya-format LoRA files, patched into a model's weights in place the way AUTOMATIC1111 applies them.

A file holds, per layer, `<name>.lora_down.weight` (r, in[, k, k]), `<name>.lora_up.weight` (out, r[, 1, 1])
and optionally `<name>.alpha`; the layer's weight gains multiplier * alpha / r * up @ down. LoCon files
(kohya's conv_dim) are the same format with k = 3 on the UNet's resnet and resampler convolutions.
Layers may instead hold LyCORIS LoHa (`hada_*`, inference.loha) or LoKr (`lokr_*`, inference.lokr)
tensors, mixed freely within a file, and any of them a DoRA magnitude (`dora_scale`, inference.dora); this
module reads the file, sorts each layer into its family and patches the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from data.errors import LoraSmithError, LoraSmithWarning
from data.file_hash import file_sha256
from inference import loha, lokr
from inference.components import BaseModel
from inference.dora import DoraModule
from inference.lora_sgm_names import sgm_names
from inference.lycoris import LayerFormatError, LayerWeights

_LORA_PARAMS = ("lora_down.weight", "lora_up.weight", "alpha")
# A layer's family is told by the prefix of its tensors' names; `alpha` belongs to every family.
_FAMILIES = {"lora_": "LoRA", "hada_": "LoHa", "lokr_": "LoKr"}
_KNOWN_PARAMS = frozenset(_LORA_PARAMS + loha.PARAMS + lokr.PARAMS + ("dora_scale",))
_PATCHABLE = (nn.Linear, nn.Conv2d)


class LoraFormatError(LoraSmithError, ValueError):
    """A LoRA file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class LoraModule:
    """The LoRA pair of one layer: down (r, in[, k, k]), up (out, r[, 1, 1]); alpha None means alpha = r."""

    down: Tensor
    up: Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        """The inner dimension r."""
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        """alpha / rank, the factor kohya's trainer applied during training."""
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    @classmethod
    def from_parts(cls, parts: dict[str, Tensor]) -> LoraModule:
        """Build from one layer's `lora_down.weight` / `lora_up.weight` / `alpha` tensors."""
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LayerFormatError("LoRA layer has no lora_down or no lora_up weight")
        alpha = parts.get("alpha")
        return cls(
            parts["lora_down.weight"], parts["lora_up.weight"], None if alpha is None else float(alpha)
        )

    def updown(self, shape: torch.Size, device: torch.device) -> Tensor:
        """up @ down in fp32 on `device`, shaped `shape`; LayerFormatError if the pair doesn't fit."""
        down = self.down.to(device, torch.float32)
        up = self.up.to(device, torch.float32)
        up_2d, down_2d = up.reshape(up.shape[0], -1), down.reshape(self.rank, -1)
        fits = up_2d.shape == (shape[0], self.rank) and down_2d.shape[1] == shape[1:].numel()
        # A 4-D down must carry the conv kernel; 2-D/4-D mixes are only a 1x1 squeeze.
        if down.dim() == 4 and len(shape) == 4:
            fits = fits and down.shape[2:] == shape[2:]
        if not fits:
            raise LayerFormatError(
                f"down {tuple(down.shape)} and up {tuple(up.shape)} do not fit the model's weight {tuple(shape)}"
            )
        # Contracting over r covers Linear, 1x1 conv and kxk conv (down holds the kernel, up is 1x1) alike.
        return (up_2d @ down_2d).reshape(shape)


@dataclass
class LoraWeights:
    """A loaded LoRA: `modules` maps kohya key names (`lora_unet_…`, `lora_te_…`) to their weights.

    Each layer's weights are a LoraModule, a loha.LohaModule or a lokr.LokrModule.
    """

    name: str
    modules: dict[str, LayerWeights]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def parse_lora_state_dict(tensors: dict[str, Tensor], source: str = "state dict") -> dict[str, LayerWeights]:
    """Group `<name>.<param>` tensors by layer into one LoRA / LoHa / LoKr module per layer."""
    groups: dict[str, dict[str, Tensor]] = {}
    unsupported: list[str] = []
    _check_finite(tensors, source)
    for key, tensor in tensors.items():
        name, _, param = key.partition(".")
        if param not in _KNOWN_PARAMS:
            unsupported.append(key)
            continue
        groups.setdefault(name, {})[param] = tensor
    if unsupported:
        raise LoraFormatError(
            f"{source}: {len(unsupported)} keys of an unsupported kind (LoRA/LoCon lora_down/lora_up, LoHa "
            f"hada_*, LoKr lokr_*, alpha and dora_scale are read), e.g. {', '.join(unsupported[:3])}"
        )
    modules = {name: _layer_module(name, parts, source) for name, parts in groups.items()}
    if not modules:
        raise LoraFormatError(
            f"{source}: no LoRA weights found (expected keys like lora_unet_….lora_down.weight)"
        )
    return modules


def _check_finite(tensors: dict[str, Tensor], source: str) -> None:
    """LoraFormatError naming the first tensor with NaN or infinite values: patched in, it renders black."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise LoraFormatError(
                f"{source}: {key} holds {bad} NaN or infinite values, so every picture would come out black; "
                "the training run that wrote it diverged: use an earlier epoch's file or retrain"
            )


def _layer_module(name: str, parts: dict[str, Tensor], source: str) -> LayerWeights:
    """The module of one layer's tensors, by the family their names tell; LoraFormatError naming both."""
    families = {family for prefix, family in _FAMILIES.items() for param in parts if param.startswith(prefix)}
    if len(families) != 1:
        found = " and ".join(sorted(families)) if families else "only " + " and ".join(sorted(parts))
        raise LoraFormatError(f"{source}: layer {name} has {found} tensors; a layer holds one kind")
    parts = dict(parts)
    magnitude = parts.pop("dora_scale", None)  # DoRA: the change's magnitude (inference.dora)
    build = {
        "LoRA": LoraModule.from_parts,
        "LoHa": loha.LohaModule.from_parts,
        "LoKr": lokr.LokrModule.from_parts,
    }
    try:
        change = build[families.pop()](parts)
        return change if magnitude is None else DoraModule(change, magnitude)
    except LayerFormatError as error:
        raise LoraFormatError(f"{source}: layer {name}: {error}") from error


def load_lora_file(path: str | Path) -> LoraWeights:
    """Read a kohya/A1111 LoRA `.safetensors` file; its name is the file stem, as in `<lora:NAME:w>`."""
    path = Path(path)
    if not path.is_file():
        raise LoraFormatError(f"LoRA file not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own types for truncated or foreign files
        raise LoraFormatError(f"{path}: not a readable .safetensors file ({error})") from error
    return LoraWeights(path.stem, parse_lora_state_dict(tensors, source=str(path)), metadata, path)


def lora_file_hash(path: str | Path) -> str:
    """A1111's "addnet" hash: sha256 of a .safetensors file's bytes after its JSON header (hex)."""
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
    return file_sha256(path, start=8 + header_length)


def lora_key_map(model: BaseModel) -> dict[str, tuple[nn.Module, str]]:
    """Kohya key name → (layer, "unet" | "te") for every Linear/Conv2d layer of the model.

    Built from the model's own module paths, so names with underscores (`to_out_0`, `ff_net_0_proj`) never
    have to be split back into a path. Text-encoder layers answer to A1111's `lora_te_text_model_…` and to
    the `lora_te1_…` spellings with or without `text_model_` (transformers 5 dropped that level); SDXL's
    second encoder to `lora_te2_…`. UNet layers also answer to their original-layout names
    (`inference.lora_sgm_names`), which kohya's SDXL files use.
    """
    keys: dict[str, tuple[nn.Module, str]] = {}
    original = sgm_names(model.unet)
    for path, module in model.unet.named_modules():
        if isinstance(module, _PATCHABLE):
            keys["lora_unet_" + path.replace(".", "_")] = (module, "unet")
            if path in original:  # kohya's SDXL names (and A1111's for any model): the original layout
                keys.setdefault("lora_unet_" + original[path].replace(".", "_"), (module, "unet"))
    encoders = [(model.text_encoder, ("lora_te_", "lora_te1_"))]
    if getattr(model, "text_encoder_2", None) is not None:  # SDXL's OpenCLIP bigG
        encoders.append((model.text_encoder_2, ("lora_te2_",)))
    for encoder, prefixes in encoders:
        for path, module in encoder.named_modules():
            if isinstance(module, _PATCHABLE):
                bare = path.removeprefix("text_model.").replace(".", "_")
                for prefix in prefixes:
                    keys[f"{prefix}text_model_{bare}"] = (module, "te")
                    keys.setdefault(prefix + bare, (module, "te"))
    return keys


def lora_delta(weights: LayerWeights, weight: Tensor, multiplier: float, name: str = "") -> Tensor:
    """The change multiplier * scale * updown of one layer, in fp32 on the weight's device, shaped like it.

    A DoRA layer's change depends on the weight itself (inference.dora). `name` says where the layer comes
    from (file and key) in the error raised when it does not fit.
    """
    try:
        if isinstance(weights, DoraModule):
            return weights.delta(weight, multiplier)
        updown = weights.updown(weight.shape, weight.device)
    except LayerFormatError as error:
        raise LoraFormatError(
            f"LoRA layer {name}: {error}; was it trained for a different base model?"
        ) from error
    return updown * (multiplier * weights.scale)


def lora_family(lora: LoraWeights) -> str | None:
    """ "SDXL" or "SD 1.x/2.x" when the file says which family it was trained for (kohya's
    ss_base_model_version, else its text-encoder keys: lora_te1_/lora_te2_ are SDXL's, lora_te_ SD's)."""
    version = lora.metadata.get("ss_base_model_version", "")
    if version:
        return "SDXL" if version.startswith("sdxl") else "SD 1.x/2.x" if version.startswith("sd_v") else None
    if any(key.startswith(("lora_te1_", "lora_te2_")) for key in lora.modules):
        return "SDXL"
    if any(key.startswith("lora_te_") for key in lora.modules):
        return "SD 1.x/2.x"
    return None


def check_lora_family(model: BaseModel, lora: LoraWeights) -> None:
    """A LoRA made for the other family (an SDXL LoRA on an SD 1.5 model, or the reverse) is one clear error
    instead of a shape mismatch deep in some layer."""
    family = lora_family(lora)
    ours = "SDXL" if getattr(model, "text_encoder_2", None) is not None else "SD 1.x/2.x"
    if family is not None and family != ours:
        raise LoraFormatError(
            f"LoRA {lora.path or lora.name} was trained for {family}, but this model is {ours}: use it with an "
            f"{family} model, or pick a LoRA made for {ours}"
        )


def _matched_layers(model: BaseModel, lora: LoraWeights) -> list[tuple[str, nn.Module, LayerWeights, str]]:
    """(key, layer, weights, part) for each LoRA key found in the model; warns once about the rest."""
    check_lora_family(model, lora)
    key_map = lora_key_map(model)
    matched, missing = [], []
    for key, weights in lora.modules.items():
        if key in key_map:
            layer, part = key_map[key]
            matched.append((key, layer, weights, part))
        else:
            missing.append(key)
    if missing:
        warnings.warn(
            f"LoRA {lora.name}: couldn't find {len(missing)} of {len(lora.modules)} layers in the model, "
            f"e.g. {', '.join(missing[:3])}; they are ignored",
            LoraSmithWarning,
            stacklevel=4,  # point at the caller's `with` line, past contextlib
        )
    return matched


@contextmanager
def applied_lora(
    model: BaseModel, lora: LoraWeights, te_multiplier: float, unet_multiplier: float
) -> Iterator[None]:
    """Patch the LoRA into the model's weights for the `with` block, then restore the exact originals."""
    multipliers = {"te": te_multiplier, "unet": unet_multiplier}
    backups: list[tuple[Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for key, layer, weights, part in _matched_layers(model, lora):
                if multipliers[part] == 0:
                    continue  # no arithmetic at all, so weight 0 is bitwise the base model
                weight = layer.weight
                delta = lora_delta(weights, weight, multipliers[part], f"{lora.path or lora.name}: {key}")
                backups.append((weight, weight.detach().clone()))
                # Summing in fp32 keeps small deltas from vanishing against fp16/bf16 weights.
                weight.copy_((weight.float() + delta).to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for weight, original in reversed(backups):
                weight.copy_(original)
