"""`network.module` → the class that trains it; each type lives in its own module beside this one."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig, OptimizerConfig
from train.errors import ConfigError
from train.network.base import TrainedNetwork, tunes_base_model
from train.network.blocks import BLOCK_KEYS
from train.network.dora import DoRANetwork
from train.network.embedding import EmbeddingNetwork
from train.network.full import FullFineTune
from train.network.loha import LohaNetwork
from train.network.lokr import LokrNetwork
from train.network.lora import LoRANetwork

NETWORKS: dict[str, Callable[[ModelBundle, NetworkConfig], TrainedNetwork]] = {
    "lora": LoRANetwork,
    "loha": LohaNetwork,
    "lokr": LokrNetwork,
    "embedding": EmbeddingNetwork,
    "dora": DoRANetwork,
    "full": FullFineTune,
}


# The networks that know SDXL's layout: kohya's SGM names for the UNet, lora_te1 / lora_te2 for its encoders.
SDXL_NETWORKS = ("lora", "loha", "lokr", "dora")


def check_sdxl_network(bundle: ModelBundle, cfg: NetworkConfig) -> None:
    """On SDXL: a network type that trains it, without SD 1.x's 25-block options (kohya's SDXL has 23)."""
    if not bundle.is_sdxl:
        return
    if cfg.module not in SDXL_NETWORKS:
        raise ConfigError(
            f"network.module={cfg.module} does not train SDXL models ({bundle.source}) yet; "
            f"choose one of {', '.join(SDXL_NETWORKS)}"
        )
    used = [key for key in BLOCK_KEYS if getattr(cfg, key) not in (None, 0.0)]
    if used:
        raise ConfigError(
            f"network.{used[0]}: the block-wise options count SD 1.x's 25 UNet blocks and do not apply to "
            f"SDXL ({bundle.source}); remove {', '.join(f'network.{key}' for key in used)}"
        )


# The networks whose dim / conv_dim is a rank of each adapted layer (LoKr reads a huge dim as "full matrix").
RANKED_NETWORKS = ("lora", "dora", "loha")


def layer_width(layer: nn.Module) -> int:
    """The largest useful rank of an adapter on `layer`: min(inputs, outputs) of its weight matrix."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    kh, kw = layer.kernel_size
    return min(layer.in_channels // layer.groups * kh * kw, layer.out_channels)


def check_rank_fits(bundle: ModelBundle, cfg: NetworkConfig) -> None:
    """A rank above every layer's width adds nothing but memory (a mistyped dim=100000 ran out of it)."""
    if cfg.module not in RANKED_NETWORKS:
        return
    models = [m for m in (bundle.unet, bundle.text_encoder, bundle.text_encoder_2) if m is not None]
    layers = [m for model in models for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    widest = max(map(layer_width, layers), default=0)
    for key in ("dim", "conv_dim"):
        rank = getattr(cfg, key)
        if rank > widest:
            raise ConfigError(
                f"network.{key}={rank} is more than the widest layer of {bundle.source} can use ({widest}: a "
                f"rank above a layer's inputs or outputs adds nothing); 4 to 128 is usual"
            )


def build_network(bundle: ModelBundle, cfg: NetworkConfig) -> TrainedNetwork:
    """The network `cfg.module` names, its adapters in place on `bundle` (config checks ran before)."""
    check_sdxl_network(bundle, cfg)
    check_rank_fits(bundle, cfg)
    return NETWORKS[cfg.module](bundle, cfg)


def optimizer_groups(network: TrainedNetwork, bundle: ModelBundle, opt: OptimizerConfig) -> list[dict]:
    """The network's optimizer groups at the configured rates; SDXL's second text encoder at its own rate
    when optimizer.text_encoder_lr gives two."""
    second = opt.text_encoder_2_lr
    if second is None:
        return network.param_groups(*opt.part_lrs)
    if not bundle.is_sdxl:
        raise ConfigError(
            f"optimizer.text_encoder_lr={opt.text_encoder_lr}: {bundle.source} has one text encoder; give one "
            "number (two are the rates of SDXL's two text encoders)"
        )
    return network.param_groups(*opt.part_lrs, second)


def keeps_whole_model(cfg: NetworkConfig) -> bool:
    """Whether the network `cfg.module` names saves the whole model (the VAE must then stay loaded)."""
    return tunes_base_model(NETWORKS[cfg.module])
