"""kohya's files as flat settings for `train.kohya_config.convert`: an sd-scripts `--config_file` TOML (flat or
in tables), a dataset TOML (its [general] keys and first dataset, subsets by folder), or the kohya_ss GUI's
saved JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def flatten_toml(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' --config_file groups its keys in tables ([model_arguments] ...); the keys are flat."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_toml(value))
        else:
            flat[key] = value
    return flat


def dataset_settings(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A dataset TOML's [general] keys and one dataset's keys; subsets by image_dir are listed as lacking
    unless they follow the `N_token class` folder convention (then their parent is the train folder)."""
    settings = dict(data.get("general", {}))
    lacking = []
    datasets = data.get("datasets", [])
    if len(datasets) > 1:
        lacking.append(f"datasets: {len(datasets)} datasets; only the first is converted")
    renamed = {"batch_size": "train_batch_size"}  # the dataset TOML's name for it
    for dataset in datasets[:1]:
        settings.update({renamed.get(k, k): v for k, v in dataset.items() if k != "subsets"})
        for subset in dataset.get("subsets", []):
            folder = Path(str(subset.get("image_dir", "")))
            repeats, _, _ = folder.name.partition("_")
            target = "reg_data_dir" if subset.get("is_reg") else "train_data_dir"
            if repeats.isdigit():
                settings[target] = str(folder.parent)
                if "num_repeats" in subset and subset["num_repeats"] != int(repeats):
                    lacking.append(
                        f"subset num_repeats={subset['num_repeats']}: repeats come from the folder name "
                        f"({folder.name}); rename the folder to {subset['num_repeats']}_{folder.name.partition('_')[2]}"
                    )
            else:
                lacking.append(
                    f"subset image_dir={folder}: name its folder `N_token class` (e.g. 10_sls 1girl) and it "
                    f"converts to dataset.{'reg_dir' if subset.get('is_reg') else 'train_dir'}"
                )
            settings.update(
                {k: v for k, v in subset.items() if k not in ("image_dir", "is_reg", "num_repeats")}
            )
    return settings, lacking


def read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, from PyPI before Python 3.11
        import tomli as tomllib
    return tomllib.loads(path.read_text(encoding="utf-8"))


def read_settings(path: Path) -> dict[str, Any]:
    """A kohya TOML (flat or in tables) or a kohya_ss GUI JSON, as flat settings."""
    if path.suffix.lower() == ".json":
        return dict(json.loads(path.read_text(encoding="utf-8")))
    return flatten_toml(read_toml(path))
