"""Search-space pieces that YAML cannot say, and the baseline trials a sweep measures first.

- `conv_alpha_only_with_convs` (`hydra.sweeper.custom_search_space`): a trial that samples
  `network.conv_dim=0` is a plain LoRA (attention layers only), so it also sets `network.conv_alpha=null`:
  the experiment's conv_alpha would otherwise be refused (conv_alpha without conv_dim does nothing).
- `queued_study` (`hydra.sweeper.storage`): an in-memory optuna storage whose study has the given trials
  queued, so the sweep asks them first (e.g. the experiment as shipped, the baseline the others must beat).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from omegaconf import DictConfig

# `++` sets the key whether or not the config has it, and keeps it apart from a sampled `network.conv_alpha`
# (optuna refuses one name with two kinds of distribution).
NO_CONV_ALPHA = "++network.conv_alpha"


def conv_alpha_only_with_convs(cfg: DictConfig, trial: optuna.trial.Trial) -> None:
    """With `network.conv_dim=0` sampled, the trial also gets `network.conv_alpha=null`."""
    if str(trial.params.get("network.conv_dim")) == "0":
        trial.suggest_categorical(NO_CONV_ALPHA, ["null"])


def queued_study(
    study_name: str, direction: str, trials: list[dict[str, Any]]
) -> optuna.storages.BaseStorage:
    """An in-memory storage holding study `study_name` with `trials` (parameter → value) queued in order.

    The optuna sweeper opens the study by name (load_if_exists) and asks the queued trials before sampling;
    each must lie inside the search space, and parameters it leaves out are sampled.
    """
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
    with warnings.catch_warnings():  # optuna 2 calls enqueue_trial experimental; it is how queues work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for params in trials:
            study.enqueue_trial(dict(params))
    return storage
