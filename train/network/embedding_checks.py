"""The config checks of network=embedding (textual inversion), and of its keys under any other network."""

from __future__ import annotations

from train.config import NetworkConfig, TrainConfig
from train.errors import ConfigError
from train.network.ti_captions import TEMPLATES

MAX_VECTORS = 75  # one prompt chunk: an embedding is never split across chunks


def _check_unused_elsewhere(net: NetworkConfig) -> None:
    """The textual-inversion keys mean nothing to a LoRA: refuse them instead of ignoring them."""
    given = [f"network.token_string={net.token_string}"] if net.token_string is not None else []
    given += [f"network.init_word={net.init_word}"] if net.init_word is not None else []
    given += [f"network.num_vectors_per_token={net.num_vectors_per_token}"] * (net.num_vectors_per_token != 1)
    given += [f"network.template={net.template}"] if net.template != "none" else []
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to textual inversion only (network=embedding), not "
            f"network.module={net.module}: add network=embedding, or drop them"
        )


def check_embedding(cfg: TrainConfig) -> None:
    """Token string = file name (A1111's trigger), a sane vector count, only the vectors training, no TE cache."""
    net = cfg.network
    if net.module != "embedding":
        _check_unused_elsewhere(net)
        return
    if net.token_string != cfg.name:
        raise ConfigError(
            f"network.token_string={net.token_string!r} but name={cfg.name!r}: the embedding is saved as "
            f"<name>.safetensors and A1111 triggers it by that file name, so they must agree; set "
            f"name={net.token_string} (network.token_string=null follows the name)"
        )
    if not 1 <= net.num_vectors_per_token <= MAX_VECTORS:
        raise ConfigError(
            f"network.num_vectors_per_token={net.num_vectors_per_token} must be between 1 and {MAX_VECTORS} "
            "(one prompt chunk); 1-8 is usual"
        )
    if net.init_word is not None and not net.init_word.strip():
        raise ConfigError(
            "network.init_word='' is empty: give a word (e.g. the class, `star`), or null (random)"
        )
    if net.template not in TEMPLATES:
        raise ConfigError(
            f"network.template={net.template!r} is not valid; choose one of: {', '.join(TEMPLATES)} "
            "(object = kohya --use_object_template, style = --use_style_template)"
        )
    for part in ("unet", "text_encoder"):
        if getattr(net, f"train_{part}"):
            raise ConfigError(
                f"network.train_{part}=true cannot be honoured by network=embedding: textual inversion trains "
                f"only the new token vectors, the {part.replace('_', ' ')} stays frozen; set "
                f"network.train_{part}=false, or train a LoRA (network=lora)"
            )
    d = cfg.dataset
    if d.max_token_length != 75 or d.weighted_captions:
        raise ConfigError(
            "dataset.max_token_length / dataset.weighted_captions: network=embedding reads captions as one plain "
            "chunk of 75 tokens; set dataset.max_token_length=75 and dataset.weighted_captions=false"
        )
    if cfg.dataset.cache_text_encoder_outputs:
        raise ConfigError(
            "dataset.cache_text_encoder_outputs=true cannot be combined with network=embedding: the trained "
            "vectors pass through the text encoder at every step; set dataset.cache_text_encoder_outputs=false"
        )
    if not cfg.optimizer.part_lrs[1] > 0:
        raise ConfigError(
            f"optimizer.text_encoder_lr={cfg.optimizer.text_encoder_lr}: the embedding trains at the text "
            "encoder's rate; give it one > 0 (or null to use optimizer.lr; 5e-3 is kohya's usual for TI)"
        )
