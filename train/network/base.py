"""What every trained network gives the loop: its weights, optimizer groups, saved file, resume tensors.

One module per network type (lora.py, loha.py, …) implements this; `train.network.registry` picks the one
that `network.module` names. The loop knows nothing else about a network.

Optional, for networks that need them (the helpers below call them where present):
- `tunes_base_model = True` (class attribute): the trained weights are the base model's own (a full
  fine-tune). The run then keeps the VAE for saving, and the evaluation renders the model itself.
- `begin_step(step)`: called before the batches of every optimizer step (`step` done so far, the resumed
  count included), for a network whose trained set changes during the run (stop_text_encoder_training).
- `write_final(path, dtype)`: after the final file, what else the final save writes (a diffusers folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


class TrainedNetwork(Protocol):
    """The part of a run that trains; the frozen base model stays as loaded."""

    # How the evaluation render loads the saved file: "lora" (inference.lora, any kohya/LyCORIS layout) or
    # "embedding" (inference.embeddings, triggered by the file name).
    file_format: str
    # caption → token ids (77,) when the network changes how captions tokenise (textual inversion's
    # placeholder tokens); None: the tokenizer's own ids.
    caption_ids: Callable[[str], torch.Tensor] | None

    @property
    def trains_unet(self) -> bool:
        """Whether any UNet weight trains (the UNet then runs in train mode and under accumulate)."""
        ...

    @property
    def trains_text_encoder(self) -> bool:
        """Whether any text-encoder weight trains (the text encoder then runs in every step)."""
        ...

    def parameters(self) -> list[nn.Parameter]:
        """Every trained weight, in a fixed order."""
        ...

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """Optimizer groups, each with a `name` (run_setup.lr_log_key makes it the metrics key); lr-0 parts are left out."""
        ...

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The tensors of the saved file, in the layout other tools load."""
        ...

    def write_file(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """Write the checked `tensors` (from state_dict) and header to `path` atomically; returns the path."""
        ...

    def header(self) -> dict[str, Any]:
        """The `ss_*` keys only this network knows (ss_network_module, ss_network_args, …)."""
        ...

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trained weights exactly as they are (dtype included), on the CPU: what a resume state keeps."""
        ...

    def load_trainable_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights saved by `trainable_tensors` back in, bit for bit."""
        ...

    def shape_signature(self) -> str:
        """A digest of every trained tensor's name, shape and dtype: a state fits only an equal network."""
        ...

    def remove(self) -> None:
        """Put the base model back as loaded; the training lives on in the saved files."""
        ...


def tunes_base_model(network: object) -> bool:
    """Whether `network` (an instance or its class) trains the base model's own weights."""
    return bool(getattr(network, "tunes_base_model", False))


def begin_step(network: TrainedNetwork, step: int) -> None:
    """Tell `network` that optimizer step `step + 1` begins (`begin_step` where it has one)."""
    hook = getattr(network, "begin_step", None)
    if hook is not None:
        hook(step)


def write_final(network: TrainedNetwork, path: Path, dtype: torch.dtype) -> Path | None:
    """The final save's extra outputs beside `path` (`write_final` where the network has one)."""
    hook = getattr(network, "write_final", None)
    return hook(path, dtype) if hook is not None else None


class AdaptedParts:
    """Networks made of adapted layers (LoRA, LyCORIS): a part trains when it has adapted layers."""

    unet_layers: list
    text_encoder_layers: list

    @property
    def layers(self) -> list:
        """Text encoder's layers first, then the UNet's: the order of every file and state."""
        return self.text_encoder_layers + self.unet_layers

    @property
    def trains_unet(self) -> bool:
        return bool(self.unet_layers)

    @property
    def trains_text_encoder(self) -> bool:
        return bool(self.text_encoder_layers)

    def encoder_parts(self, text_encoder_lr: float, text_encoder_2_lr: float | None) -> list[tuple]:
        """(group name, layers, lr) of the text encoders: one `te` group at `text_encoder_lr` (kohya's
        networks.lora, SDXL's two encoders together), or with `text_encoder_2_lr` (SDXL, kohya's
        --text_encoder_lr with two values) `te1` and `te2` at their own rates."""
        if text_encoder_2_lr is None:
            return [("te", self.text_encoder_layers, text_encoder_lr)]
        first = [layer for layer in self.text_encoder_layers if layer.target.component == "text_encoder"]
        second = [layer for layer in self.text_encoder_layers if layer.target.component == "text_encoder_2"]
        return [("te1", first, text_encoder_lr), ("te2", second, text_encoder_2_lr)]
