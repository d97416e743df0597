"""`network.module` → the class that trains it; each type lives in its own module beside this one."""

from __future__ import annotations

from collections.abc import Callable

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


def build_network(bundle: ModelBundle, cfg: NetworkConfig) -> TrainedNetwork:
    """The network `cfg.module` names, its adapters in place on `bundle` (config checks ran before)."""
    check_sdxl_network(bundle, cfg)
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
