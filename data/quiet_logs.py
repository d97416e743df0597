"""Quiet the third-party loggers that warn on every start about optional parts LoraSmith does not use."""

from __future__ import annotations

import logging

# logger -> the level below which it stays silent, and why
NOISY_LOGGERS = {
    "bitsandbytes": logging.ERROR,  # imported by peft: "an optional CPU kernel package is not installed"
    "kernels": logging.ERROR,  # with HF_HUB_OFFLINE=1: "skipping the publisher trust check" of that package
    "alembic": logging.WARNING,  # optuna's database layer lists its plugins at every start
}


def quiet_third_party_logs() -> None:
    """Raise each noisy logger's level; call it before the libraries are imported."""
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
