"""Kohya-format LoRA files, patched into a model's weights in place the way AUTOMATIC1111 applies them.

A file holds, per layer, `<name>.lora_down.weight` (r, in[, k, k]), `<name>.lora_up.weight` (out, r[, 1, 1])
and optionally `<name>.alpha`; the layer's weight gains multiplier * alpha / r * up @ down. LoCon files
(kohya's conv_dim) are the same format with k = 3 on the UNet's resnet and resampler convolutions.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from data.errors import LoraSmithError
from inference.components import BaseModel

_PARAMS = ("lora_down.weight", "lora_up.weight", "alpha")
_LYCORIS_PREFIXES = ("hada_", "lokr_")
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


@dataclass
class LoraWeights:
    """A loaded LoRA: `modules` maps kohya key names (`lora_unet_…`, `lora_te_…`) to their weights."""

    name: str
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def parse_lora_state_dict(tensors: dict[str, Tensor], source: str = "state dict") -> dict[str, LoraModule]:
    """Group `<name>.lora_down.weight / .lora_up.weight / .alpha` tensors into one LoraModule per layer."""
    groups: dict[str, dict[str, Tensor]] = {}
    unsupported: list[str] = []
    for key, tensor in tensors.items():
        name, _, param = key.partition(".")
        if param.startswith(_LYCORIS_PREFIXES):
            raise LoraFormatError(
                f"{source}: LoHa/LoKr (LyCORIS) weights such as {key!r} are not supported yet; "
                "use a plain LoRA / LoCon file"
            )
        if param not in _PARAMS:
            unsupported.append(key)
            continue
        groups.setdefault(name, {})[param] = tensor
    if unsupported:
        raise LoraFormatError(
            f"{source}: {len(unsupported)} keys of an unsupported kind (only lora_down, lora_up and alpha "
            f"are read), e.g. {', '.join(unsupported[:3])}"
        )
    modules = {}
    for name, parts in groups.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LoraFormatError(f"{source}: layer {name} has no lora_down or no lora_up weight")
        alpha = parts.get("alpha")
        modules[name] = LoraModule(
            parts["lora_down.weight"], parts["lora_up.weight"], None if alpha is None else float(alpha)
        )
    if not modules:
        raise LoraFormatError(
            f"{source}: no LoRA weights found (expected keys like lora_unet_….lora_down.weight)"
        )
    return modules


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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + header_length)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lora_key_map(model: BaseModel) -> dict[str, tuple[nn.Module, str]]:
    """Kohya key name → (layer, "unet" | "te") for every Linear/Conv2d layer of the model.

    Built from the model's own module paths, so names with underscores (`to_out_0`, `ff_net_0_proj`) never
    have to be split back into a path. Text-encoder layers answer to A1111's `lora_te_text_model_…` and to
    the `lora_te1_…` spellings with or without `text_model_` (transformers 5 dropped that level).
    """
    keys: dict[str, tuple[nn.Module, str]] = {}
    for path, module in model.unet.named_modules():
        if isinstance(module, _PATCHABLE):
            keys["lora_unet_" + path.replace(".", "_")] = (module, "unet")
    for path, module in model.text_encoder.named_modules():
        if isinstance(module, _PATCHABLE):
            bare = path.removeprefix("text_model.").replace(".", "_")
            for prefix in ("lora_te_", "lora_te1_"):
                keys[f"{prefix}text_model_{bare}"] = (module, "te")
                keys.setdefault(prefix + bare, (module, "te"))
    return keys


def lora_delta(lora: LoraModule, weight: Tensor, multiplier: float, name: str = "") -> Tensor:
    """The weight change multiplier * alpha / r * up @ down, in fp32 on the weight's device, shaped like it."""
    down = lora.down.to(weight.device, torch.float32)
    up = lora.up.to(weight.device, torch.float32)
    up_2d, down_2d = up.reshape(up.shape[0], -1), down.reshape(lora.rank, -1)
    fits = up_2d.shape == (weight.shape[0], lora.rank) and down_2d.shape[1] == weight[0].numel()
    # A 4-D down must carry the conv kernel; 2-D/4-D mixes are only a 1x1 squeeze.
    if down.dim() == 4 and weight.dim() == 4:
        fits = fits and down.shape[2:] == weight.shape[2:]
    if not fits:
        raise LoraFormatError(
            f"LoRA layer {name}: down {tuple(down.shape)} and up {tuple(up.shape)} do not fit the model's "
            f"weight {tuple(weight.shape)}; was it trained for a different base model?"
        )
    # Contracting over r covers Linear, 1x1 conv and kxk conv (down holds the kernel, up is 1x1) alike.
    return ((up_2d @ down_2d) * (multiplier * lora.scale)).reshape(weight.shape)


def _matched_layers(model: BaseModel, lora: LoraWeights) -> list[tuple[str, nn.Module, LoraModule, str]]:
    """(key, layer, weights, part) for each LoRA key found in the model; warns once about the rest."""
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
                delta = lora_delta(weights, weight, multipliers[part], key)
                backups.append((weight, weight.detach().clone()))
                # Summing in fp32 keeps small deltas from vanishing against fp16/bf16 weights.
                weight.copy_((weight.float() + delta).to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for weight, original in reversed(backups):
                weight.copy_(original)
