"""`network.module` → the class that trains it; each type lives in its own module beside this one."""

from __future__ import annotations

from collections.abc import Callable

from inference.models.bundle import ModelBundle
from train.config import NetworkConfig
from train.network.base import TrainedNetwork, tunes_base_model
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


def build_network(bundle: ModelBundle, cfg: NetworkConfig) -> TrainedNetwork:
    """The network `cfg.module` names, its adapters in place on `bundle` (config checks ran before)."""
    return NETWORKS[cfg.module](bundle, cfg)


def keeps_whole_model(cfg: NetworkConfig) -> bool:
    """Whether the network `cfg.module` names saves the whole model (the VAE must then stay loaded)."""
    return tunes_base_model(NETWORKS[cfg.module])
