"""Write a model as a diffusers folder (what `StableDiffusionPipeline.from_pretrained` and our loader read).

Each part is written as its own `save_pretrained` writes it (config.json / scheduler_config.json, the
tokenizer files, `diffusion_pytorch_model.safetensors` / `model.safetensors`), with the weights cast to the
save dtype on the way out: the trained model in memory keeps its fp32 weights. The folder is filled beside
the target and renamed into place, so a reader never sees half a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from safetensors.torch import save_file
from torch import nn

from data.atomic import atomic_directory
from inference.models.bundle import ModelBundle

WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
LIBRARIES = {"unet": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}


def _weights(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU, float ones in `dtype`, each its own storage (safetensors refuses views)."""
    return {
        key: value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype, copy=True)
        for key, value in model.state_dict().items()
    }


def _write_part(model: nn.Module, folder: Path, name: str, dtype: torch.dtype) -> None:
    folder.mkdir()
    if LIBRARIES[name] == "diffusers":
        model.save_config(folder)
    else:
        model.config.save_pretrained(folder)
    save_file(_weights(model, dtype), folder / f"{WEIGHT_FILES[name]}.safetensors", metadata={"format": "pt"})


def model_index(bundle: ModelBundle) -> dict:
    """model_index.json of a StableDiffusionPipeline without safety checker."""
    index: dict = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__}
    for name in WEIGHT_FILES:
        index[name] = [LIBRARIES[name], type(getattr(bundle, name)).__name__]
    index["tokenizer"] = ["transformers", type(bundle.tokenizer).__name__]
    index["scheduler"] = ["diffusers", type(bundle.noise_scheduler).__name__]
    index |= {"safety_checker": [None, None], "feature_extractor": [None, None]}
    return index | {"requires_safety_checker": False}


def write_diffusers_folder(bundle: ModelBundle, folder: Path, dtype: torch.dtype = torch.float32) -> Path:
    """`folder` as a diffusers model folder (unet, vae, text_encoder, tokenizer, scheduler), atomically."""
    with atomic_directory(folder) as tmp:
        for name in WEIGHT_FILES:
            _write_part(getattr(bundle, name), tmp / name, name, dtype)
        bundle.tokenizer.save_pretrained(tmp / "tokenizer")
        bundle.noise_scheduler.save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(model_index(bundle), indent=2) + "\n")
    return folder
