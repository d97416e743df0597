"""Shared fixtures: the real config tree composed through Hydra, the tiny model, offline hub access."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
from data.quiet_logs import quiet_third_party_logs  # noqa: E402

quiet_third_party_logs()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def compose_config(tmp_path):
    """Compose `configs/train.yaml` with overrides, as `python -m train` would, into the typed config."""
    from hydra import compose, initialize_config_dir

    from train.config import load_config

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        cfg.output_dir = str(tmp_path / "run")
        return load_config(cfg)

    return _compose
