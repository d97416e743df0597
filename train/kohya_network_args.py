"""kohya's `--network_args` / `--optimizer_args` lists (`["k=v", …]`) as our overrides: LoCon's conv dims,
dropouts, LoRA+, block-wise weights and dims, LyCORIS' algo / LoKr / Tucker keys and DoRA's `dora_wd`, each
mapped to its `network.*` key or listed as lacking (train/kohya_config.py collects them)."""

from __future__ import annotations

from typing import Any

Override = list[tuple[str, Any]]  # (our key, value) pairs; a config group's key takes the option's name


def key_values(items: Any) -> dict[str, Any]:
    """kohya's `["k=v", ...]` (or one space-separated string) with Python-literal values."""
    import ast

    if isinstance(items, str):
        items = items.split()
    result = {}
    for item in items or []:
        key, _, raw = str(item).partition("=")
        try:
            result[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            result[key.strip()] = raw.strip()
    return result


def optimizer_args(value: Any) -> Override:
    return [(f"optimizer.args.{key}", v) for key, v in key_values(value).items()]


NETWORK_ARGS = {
    "conv_dim": "network.conv_dim",
    "conv_alpha": "network.conv_alpha",
    "rank_dropout": "network.rank_dropout",
    "module_dropout": "network.module_dropout",
    "loraplus_lr_ratio": "network.loraplus_lr_ratio",
    "loraplus_unet_lr_ratio": "network.loraplus_unet_lr_ratio",
    "loraplus_text_encoder_lr_ratio": "network.loraplus_text_encoder_lr_ratio",
    **{
        key: f"network.{key}"
        for key in (
            "down_lr_weight",
            "mid_lr_weight",
            "up_lr_weight",
            "block_lr_zero_threshold",
            "block_dims",
            "block_alphas",
            "conv_block_dims",
            "conv_block_alphas",
        )  # fmt: skip
    },
    "factor": "network.factor",
    "decompose_both": "network.decompose_both",
    "full_matrix": "network.full_matrix",
    "use_tucker": "network.use_tucker",
    "use_cp": "network.use_tucker",  # LyCORIS's older names for use_tucker
    "use_conv_cp": "network.use_tucker",
}
LYCORIS_ALGOS = ("loha", "lokr")  # LyCORIS's algo=… that have a network of their own here


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


def dora_args(args: dict[str, Any]) -> tuple[Override, list[str]]:
    """LyCORIS' `dora_wd=True` is network=dora, which trains the input axis (`wd_on_output=False`) only."""
    if not _true(args.pop("dora_wd", False)):
        return [], []
    on_output = args.pop("wd_on_output", True)  # LyCORIS' default
    if not _true(on_output):
        return [("network.module", "dora")], []
    why = "DoRA trains the input axis here (wd_on_output=False), the form ComfyUI, Forge and A1111 reload as trained"
    return [("network.module", "dora")], [f"network_args wd_on_output={on_output}: {why}"]


def network_args(value: Any) -> tuple[Override, list[str]]:
    args = key_values(value)
    overrides, lacking = dora_args(args)
    for key, v in args.items():
        if key in NETWORK_ARGS:
            overrides.append((NETWORK_ARGS[key], v))
        elif key == "algo" and v in ("locon", "lora"):
            continue  # LyCORIS' LoCon is networks.lora with conv_dim here
        elif key == "algo" and v in LYCORIS_ALGOS:
            overrides.append(("network", v))  # configs/network/loha.yaml, lokr.yaml
        elif key == "wd_on_output" and not _true(v):
            continue  # the axis network=dora trains
        else:
            lacking.append(f"network_args {key}={v}: not supported yet")
    return overrides, lacking


def network_module(value: Any) -> Override:
    if value in ("networks.lora", "lycoris.kohya"):
        return []
    raise KeyError(value)
