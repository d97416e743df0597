"""The network.* checks: each network type's keys, and what it refuses (a config_checks part)."""

from __future__ import annotations

from typing import Any

from train.config import NETWORK_MODULES, NetworkConfig, TrainConfig
from train.errors import ConfigError
from train.network.blocks import BLOCK_KEYS, block_lr_weights, block_ranks


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def check_positive(key: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive number")


def _check_conv(net: NetworkConfig) -> None:
    """conv_alpha only means something with conv_dim; kohya ignores it silently, we say so."""
    if net.conv_dim < 0:
        raise ConfigError(f"network.conv_dim={net.conv_dim} must be >= 0 (0 = no LoRA on 3x3 convs)")
    if net.conv_alpha is None:
        return
    if not net.conv_dim:
        raise ConfigError(
            f"network.conv_alpha={net.conv_alpha} has no effect while network.conv_dim=0: set "
            "network.conv_dim > 0 to train the 3x3 convs, or network=lora / network.conv_alpha=null"
        )
    check_positive("network.conv_alpha", net.conv_alpha)


LORAPLUS_KEYS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
LOKR_KEYS = {"factor": -1, "decompose_both": False, "full_matrix": False}


def _check_lycoris(net: NetworkConfig) -> None:
    """LoHa / LoKr: no plain dropout (LyCORIS has none for them) and no LoRA+ (they have no up-weights);
    Tucker cores only where 3x3 convolutions train."""
    if net.module not in ("loha", "lokr"):
        if net.use_tucker:
            raise ConfigError(
                f"network.use_tucker=true applies to network.module=loha or lokr, not {net.module}; "
                "set network.use_tucker=false"
            )
        return
    if net.use_tucker and not net.conv_dim:
        raise ConfigError(
            "network.use_tucker=true has no effect while network.conv_dim=0: Tucker cores replace the 3x3 "
            "convolutions' factors, which train only with network.conv_dim > 0 (4 is usual)"
        )
    if net.dropout:
        raise ConfigError(
            f"network.dropout={net.dropout} does not apply to network.module={net.module} (LyCORIS has no "
            "plain dropout for it); set network.dropout=0, or use network.rank_dropout / network.module_dropout"
        )
    for key in LORAPLUS_KEYS:
        if getattr(net, key) is not None:
            raise ConfigError(
                f"network.{key}={getattr(net, key)} is LoRA+ (a faster rate for LoRA's up-weights), which "
                f"network.module={net.module} does not have; set network.{key}=null"
            )
    for key in BLOCK_KEYS:
        if getattr(net, key) not in (None, 0.0):
            raise ConfigError(
                f"network.{key} is kohya's block-wise LoRA, which network.module={net.module} does not have; "
                f"remove it, or train network=lora / locon"
            )


def _check_lokr(net: NetworkConfig) -> None:
    """factor, decompose_both and full_matrix shape LoKr's factors; elsewhere they would do nothing."""
    if net.module != "lokr":
        for key, default in LOKR_KEYS.items():
            if getattr(net, key) != default:
                raise ConfigError(
                    f"network.{key}={getattr(net, key)} applies to network.module=lokr only; "
                    f"use network=lokr, or network.{key}={str(default).lower()}"
                )
        return
    if net.factor == 0 or net.factor < -1:
        raise ConfigError(
            f"network.factor={net.factor} must be -1 (automatic: near the square root) or the size of "
            "the small Kronecker factor (4, 8 or 16 are usual)"
        )
    if net.full_matrix and net.decompose_both:
        raise ConfigError(
            "network.decompose_both=true has no effect with network.full_matrix=true (both factors are "
            "then full); set one of them to false"
        )


LORA_ONLY_KEYS = (
    "dim", "alpha", "dropout", "rank_dropout", "module_dropout", "conv_dim", "conv_alpha",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio", "factor", "decompose_both",
    "full_matrix", "use_tucker", *BLOCK_KEYS,
)  # fmt: skip


def check_lora_keys_typed(cfg: TrainConfig, typed: set[str]) -> None:
    """network=full: a LoRA-only key typed on the command line with a non-default value is refused.

    The same keys from config files are ignored, so an experiment written for a LoRA (char_lora's dim and
    conv_dim) still runs as `+experiment=char_lora network=full`.
    """
    if cfg.network.module != "full":
        return
    default = NetworkConfig()
    given = [
        f"network.{key}={getattr(cfg.network, key)}"
        for key in LORA_ONLY_KEYS
        if f"network.{key}" in typed and getattr(cfg.network, key) != getattr(default, key)
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: network=full trains the model's own weights, it has no rank, alpha, dropouts "
            "or LoRA+ (kohya's train_db.py takes none of them); remove them, or use network=lora"
        )


def _check_stop_text_encoder(net: NetworkConfig) -> None:
    stop = net.stop_text_encoder_training
    if stop is None:
        return
    if net.module != "full":
        raise ConfigError(
            f"network.stop_text_encoder_training={stop} applies to network=full only (kohya's train_db.py); "
            f"with network.module={net.module} set it to null, or optimizer.text_encoder_lr=0 to freeze it"
        )
    if stop < 1:
        raise ConfigError(
            f"network.stop_text_encoder_training={stop} must be >= 1 (steps) or null (the whole run); kohya's "
            "-1 (never train it) is network.train_text_encoder=false"
        )
    if not net.train_text_encoder:
        raise ConfigError(
            f"network.stop_text_encoder_training={stop} has no effect with network.train_text_encoder=false: "
            "set it to null, or train the text encoder"
        )


def check_network(net: NetworkConfig) -> None:
    check_choice("network.module", net.module, NETWORK_MODULES)
    _check_stop_text_encoder(net)
    if net.module == "embedding":  # its own checks: train/network/embedding_checks.py
        return
    for key in ("dropout", "rank_dropout", "module_dropout"):
        if not 0 <= getattr(net, key) < 1:
            raise ConfigError(f"network.{key}={getattr(net, key)} must be in [0, 1) (0 = off; 0.1 is usual)")
    for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        value = getattr(net, key)
        if value is not None and not value > 0:
            raise ConfigError(f"network.{key}={value} must be > 0 (16 is usual) or null (off)")
    check_positive("network.dim", net.dim)
    if net.module != "full" and not net.alpha > 0:  # 0 would train nothing (scale 0), < 0 flip the LoRA
        raise ConfigError(
            f"network.alpha={net.alpha} must be > 0 for network.module={net.module} "
            "(the scale is alpha / dim; alpha = dim gives 1, which kohya reads alpha 0 as)"
        )
    _check_conv(net)
    _check_blocks(net)
    _check_lycoris(net)
    _check_lokr(net)
    if not (net.train_unet or net.train_text_encoder):
        raise ConfigError(
            "network.train_unet and network.train_text_encoder are both false: nothing to train"
        )


def _check_blocks(net: NetworkConfig) -> None:
    """Block weights and ranks parse (blocks.py raises the one-line error); a threshold is >= 0."""
    if net.block_lr_zero_threshold < 0:
        raise ConfigError(
            f"network.block_lr_zero_threshold={net.block_lr_zero_threshold} must be >= 0 (0 = off)"
        )
    block_lr_weights(net)
    for spatial in (False, True):
        block_ranks(net, spatial)
    if net.block_alphas is not None and net.block_dims is None:
        raise ConfigError("network.block_alphas needs network.block_dims (25 ranks) beside it")
    if net.conv_block_alphas is not None and net.conv_block_dims is None:
        raise ConfigError("network.conv_block_alphas needs network.conv_block_dims (25 ranks) beside it")
