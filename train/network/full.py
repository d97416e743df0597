"""Full fine-tuning (kohya's train_db.py, "DreamBooth"): the UNet's own weights train, and the text encoder's
until `network.stop_text_encoder_training` steps (kohya --stop_text_encoder_training); the VAE never.

The trained weights are the base model's, so nothing is added to it and nothing is removed after training:
the saved file is the whole model, a single `.safetensors` in the original LDM layout (A1111, ComfyUI, our
`inference model=<file>`), plus a sidecar `.yaml` when the architecture is not SD 1.5's, and at the end a
diffusers folder beside it (`NAME/`). Intermediate saves (epochs, steps) are single files only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import yaml
from torch import nn

from data.atomic import write_text_atomic
from inference.models.bundle import ModelBundle
from inference.models.diffusers_export import write_diffusers_folder
from inference.models.ldm_export import bundle_to_ldm, needs_sidecar, original_config
from train.config import NetworkConfig
from train.network.lora_file import save_lora

log = logging.getLogger(__name__)


class FullFineTune:
    """The UNet's (and the text encoder's) parameters of `bundle`, trained in place."""

    tunes_base_model = True  # see base.py: keep the VAE for saving, render the model itself in evaluation
    file_format = "checkpoint"  # an SD single file (and a diffusers folder), not loaded as a LoRA
    caption_ids = None  # captions tokenise as the tokenizer reads them

    def __init__(self, bundle: ModelBundle, cfg: NetworkConfig):
        self.bundle, self.cfg = bundle, cfg
        self.unet = dict(bundle.unet.named_parameters()) if cfg.train_unet else {}
        self.text_encoder = dict(bundle.text_encoder.named_parameters()) if cfg.train_text_encoder else {}
        self.text_encoder_stopped = False
        for param in self.parameters():
            param.requires_grad_(True)

    @property
    def trains_unet(self) -> bool:
        return bool(self.unet)

    @property
    def trains_text_encoder(self) -> bool:
        return bool(self.text_encoder) and not self.text_encoder_stopped

    def begin_step(self, step: int) -> None:
        """Before the batches of optimizer step `step + 1`: from step N on the text encoder is frozen
        (requires_grad off, eval mode, so it gets no gradient and the optimizer no update), as kohya does.
        Called with the resumed step count too, so a resumed run freezes it from its first batch."""
        stop = self.cfg.stop_text_encoder_training
        if stop is None or self.text_encoder_stopped or step < stop or not self.text_encoder:
            return
        self.bundle.text_encoder.requires_grad_(False)
        self.bundle.text_encoder.eval()
        self.text_encoder_stopped = True
        log.info("text encoder training stopped at step %d (network.stop_text_encoder_training)", step)

    def parameters(self) -> list[nn.Parameter]:
        """Every trained weight (text encoder first, then UNet), in the models' own order."""
        return [*self.text_encoder.values(), *self.unet.values()]

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """`te` and `unet` groups; a part at lr 0 is not trained at all (frozen, as kohya leaves it out)."""
        if not text_encoder_lr and self.text_encoder:
            self.bundle.text_encoder.requires_grad_(False)
            self.text_encoder = {}
        if not unet_lr and self.unet:
            self.bundle.unet.requires_grad_(False)
            self.unet = {}
        parts = (("te", self.text_encoder, text_encoder_lr), ("unet", self.unet, unet_lr))
        return [
            {"params": list(params.values()), "lr": lr, "name": name} for name, params, lr in parts if params
        ]

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The whole model in the LDM layout: `model.diffusion_model.*`, `first_stage_model.*`,
        `cond_stage_model.transformer.text_model.*`, float tensors in `dtype`."""
        return bundle_to_ldm(self.bundle, dtype)

    def write_file(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """The single file (atomically, `ss_*` header kept), with `<file>.yaml` first where loaders need it."""
        parameterization = "v" if self._predicts_v else None
        if needs_sidecar(self.bundle, parameterization):
            config = original_config(self.bundle, parameterization)
            write_text_atomic(path.with_suffix(".yaml"), yaml.safe_dump(config, sort_keys=False))
        return save_lora(path, tensors, metadata)

    def write_final(self, path: Path, dtype: torch.dtype) -> Path:
        """The final save's second form: a diffusers folder `NAME/` beside `NAME.safetensors`."""
        return write_diffusers_folder(self.bundle, path.with_suffix(""), dtype)

    @property
    def _predicts_v(self) -> bool:
        return self.bundle.noise_scheduler.config.prediction_type == "v_prediction"

    def header(self) -> dict:
        """`ss_network_module: full` says what this file is (kohya's train_db.py writes no network keys); no
        rank, alpha or dropout; modelspec names a checkpoint, not a LoRA (SD 1.x only is supported)."""
        stop = self.cfg.stop_text_encoder_training
        args = {} if stop is None else {"stop_text_encoder_training": str(stop)}
        lora_only = dict.fromkeys(("ss_network_dim", "ss_network_alpha", "ss_network_dropout"), None)
        architecture = {"modelspec.architecture": "stable-diffusion-v1"}
        return {"ss_network_module": "full", "ss_network_args": args, **lora_only, **architecture}

    def _named(self) -> dict[str, nn.Parameter]:
        return {f"te.{k}": p for k, p in self.text_encoder.items()} | {
            f"unet.{k}": p for k, p in self.unet.items()
        }

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trained weights exactly as they are (dtype included), on the CPU: what a resume state keeps."""
        return {name: p.detach().to("cpu", copy=True) for name, p in self._named().items()}

    def load_trainable_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights saved by `trainable_tensors` back in, bit for bit."""
        with torch.no_grad():
            for name, param in self._named().items():
                param.copy_(tensors[name])

    def shape_signature(self) -> str:
        """A digest of every trained tensor's name, shape and dtype: a state fits only an equal network."""
        digest = hashlib.sha256()
        for name, param in self._named().items():
            digest.update(f"{name}{tuple(param.shape)}{param.dtype};".encode())
        return digest.hexdigest()[:16]

    def remove(self) -> None:
        """Nothing to take out: the fine-tuned model is the result. Its weights stop training (eval mode)."""
        for model in (self.bundle.unet, self.bundle.text_encoder):
            model.requires_grad_(False)
            model.eval()
