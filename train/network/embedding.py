"""Textual inversion (kohya train_textual_inversion.py): n new token vectors train, everything else is frozen.

The vectors are a parameter of their own, (n, D), behind the text encoder's token embedding: ids below the
vocabulary size read the frozen table as before, the placeholder ids V … V+n-1 read the vectors. So the
other rows, the text encoder and the UNet stay bit for bit as loaded without kohya's restore-after-step,
and the tokenizer is never changed: captions get the placeholders from ti_captions.PlaceholderTokenizer.
The file is A1111's `.safetensors` embedding, `{"emb_params": (n, D)}`, triggered by its file name.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig
from train.network.lora_file import save_lora
from train.network.ti_captions import PlaceholderTokenizer

log = logging.getLogger(__name__)

KEY = "emb_params"  # the tensor name kohya writes and A1111 reads (a file of one tensor)
LORA_ONLY_KEYS = ("ss_network_dim", "ss_network_alpha", "ss_network_dropout")
INIT_STD = 0.02  # without init_word: N(0, 0.02), the spread CLIP initialises token embeddings with


class TokenEmbeddingWithVectors(nn.Module):
    """The frozen token table plus `vectors` (n, D) at ids table_size … table_size+n-1."""

    def __init__(self, table: nn.Embedding, vectors: nn.Parameter) -> None:
        super().__init__()
        self.table = table
        self.vectors = vectors
        self.first_id = table.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        """The frozen table, for code that reads `get_input_embeddings().weight`."""
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B, L, D); only the placeholder positions carry a gradient (to `vectors`)."""
        new = input_ids >= self.first_id
        frozen = self.table(input_ids.masked_fill(new, 0))
        index = (input_ids - self.first_id).clamp(0, self.vectors.shape[0] - 1)
        return torch.where(new.unsqueeze(-1), self.vectors[index].to(frozen.dtype), frozen)


def init_vectors(bundle: ModelBundle, init_word: str | None, count: int) -> torch.Tensor:
    """(count, D) start values: the init word's token rows, repeated or truncated to `count` (kohya)."""
    table = bundle.text_encoder.get_input_embeddings().weight.detach()
    if init_word is None:
        return torch.randn(count, table.shape[1]) * INIT_STD
    ids = bundle.tokenizer(init_word, add_special_tokens=False).input_ids
    if len(ids) > 1 and len(ids) != count:
        log.warning(
            "network.init_word=%r is %d tokens, network.num_vectors_per_token=%d: its rows are repeated or "
            "truncated to fit",
            init_word,
            len(ids),
            count,
        )
    return torch.stack([table[ids[i % len(ids)]].float().cpu() for i in range(count)])


def embedding_metadata(metadata: dict[str, str], trigger: str) -> dict[str, str]:
    """The run's `ss_*` header without LoRA-only keys, with the keys A1111 keeps in its own embedding files
    (`name`, `step`, `sd_checkpoint_name`) and kohya's modelspec architecture for textual inversion."""
    meta = {key: value for key, value in metadata.items() if key not in LORA_ONLY_KEYS}
    architecture = meta.get("modelspec.architecture", "stable-diffusion-v1/lora")
    meta["modelspec.architecture"] = architecture.rsplit("/", 1)[0] + "/textual-inversion"
    meta["name"] = trigger
    meta["step"] = meta.get("ss_steps", "0")
    meta["sd_checkpoint_name"] = Path(meta.get("ss_sd_model_name", "")).stem  # A1111: the checkpoint's name
    return meta


class EmbeddingNetwork:
    """The trainable embedding of one run: `num_vectors_per_token` vectors for `token_string`."""

    file_format = "embedding"  # the eval renders it through the engine's embeddings, not as a LoRA

    def __init__(self, bundle: ModelBundle, cfg: NetworkConfig) -> None:
        self.cfg = cfg
        self.token = cfg.token_string
        self.text_encoder = bundle.text_encoder
        table = self.text_encoder.get_input_embeddings()
        self.vectors = nn.Parameter(init_vectors(bundle, cfg.init_word, cfg.num_vectors_per_token))
        self.module = TokenEmbeddingWithVectors(table, self.vectors)
        self.text_encoder.set_input_embeddings(self.module)
        first = self.module.first_id
        self.placeholders = list(range(first, first + cfg.num_vectors_per_token))
        self.caption_ids = PlaceholderTokenizer(bundle.tokenizer, self.token, self.placeholders)

    @property
    def trains_unet(self) -> bool:
        return False

    @property
    def trains_text_encoder(self) -> bool:
        return True  # its weights are frozen, but it runs in every step: the gradient passes through it

    def parameters(self) -> list[nn.Parameter]:
        return [self.vectors]

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """One group at the text encoder's rate: the vectors are rows of its token table."""
        return [{"params": [self.vectors], "lr": text_encoder_lr, "name": "te"}] if text_encoder_lr else []

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """A1111's / kohya's embedding file: `emb_params` (n, D)."""
        return {KEY: self.vectors.detach().to("cpu", dtype).contiguous()}

    def write_file(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """One `.safetensors` file that A1111's `embeddings/` folder loads; its trigger is the file name."""
        return save_lora(path, tensors, embedding_metadata(metadata, self.token))

    def header(self) -> dict[str, Any]:
        args = {"token_string": self.token, "num_vectors_per_token": str(self.cfg.num_vectors_per_token)}
        args |= {"init_word": str(self.cfg.init_word), "template": self.cfg.template}
        return {"ss_network_module": "textual_inversion", "ss_network_args": args}

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        return {KEY: self.vectors.detach().to("cpu", copy=True)}

    def load_trainable_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vectors.copy_(tensors[KEY])

    def shape_signature(self) -> str:
        """Vectors' shape and dtype, and the token they stand for: a state fits only the same embedding."""
        text = f"{KEY}{tuple(self.vectors.shape)}{self.vectors.dtype};{self.token}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def remove(self) -> None:
        """Put the frozen token table back: the text encoder is as loaded, the vectors live on in files."""
        self.text_encoder.set_input_embeddings(self.module.table)
