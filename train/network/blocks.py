"""kohya's block-wise LoRA: a learning-rate weight and a rank per UNet block (SD 1.x/2.x, 25 blocks).

Blocks are numbered as kohya numbers them: IN00–IN11 (0–11; IN00, the input conv, has no adapter), MID (12),
OUT00–OUT11 (13–24). A module in `down_blocks_i_{resnets,attentions}_j` is IN(1 + 3i + j), one in
`down_blocks_i_downsamplers_0` IN(3 + 3i); `up_blocks_i_…` the same from OUT00; `mid_block_…` is MID.

- `down_lr_weight` / `up_lr_weight`: 12 numbers (IN00–IN11 / OUT00–OUT11), or a preset `sine`, `cosine`,
  `linear`, `reverse_linear`, `zeros`, optionally `+x` added to every value (`sine+.5`); `mid_lr_weight` one
  number. A block's UNet learning rate is multiplied by its weight; with `block_lr_zero_threshold` t > 0,
  weights ≤ t become 0, and a block at 0 does not train (its up-weights stay 0).
- `block_dims` / `block_alphas` (and `conv_block_dims` / `conv_block_alphas` for 3x3 convs): 25 numbers,
  the rank and alpha of each block's modules; a block of rank 0 gets no adapter.

Values come as a list, or as kohya's `--network_args` text: numbers separated by commas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from train.errors import ConfigError

NUM_BLOCKS = 12  # IN and OUT blocks each; MID is one more, so 25 in all
ALL_BLOCKS = 2 * NUM_BLOCKS + 1
MID = NUM_BLOCKS
BLOCK_KEYS = (
    "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas",
    "conv_block_dims", "conv_block_alphas",
)  # fmt: skip
_UNET_BLOCK = re.compile(r"(up|down)_blocks_(\d+)_(resnets|attentions|upsamplers|downsamplers)_(\d+)_")


def block_index(kohya_name: str) -> int:
    """kohya's block number (0–24) of a UNet module, or -1 for a module outside the 25 blocks."""
    match = _UNET_BLOCK.search(kohya_name)
    if match:
        side, block, kind, index = match.groups()
        within = 3 * int(block) + (2 if kind in ("upsamplers", "downsamplers") else int(index))
        return 1 + within if side == "down" else NUM_BLOCKS + 1 + within
    return MID if "mid_block_" in kohya_name else -1


def block_name(index: int) -> str:
    """IN05, MID, OUT11: the names kohya's documentation and the block-weight extensions use."""
    if index == MID:
        return "MID"
    return f"IN{index:02d}" if index < MID else f"OUT{index - MID - 1:02d}"


def _ramp(position: Callable[[float], float], reverse: bool) -> list[float]:
    order = reversed(range(NUM_BLOCKS)) if reverse else range(NUM_BLOCKS)
    return [position(i / (NUM_BLOCKS - 1)) for i in order]


LR_PRESETS: dict[str, Callable[[], list[float]]] = {
    "sine": lambda: _ramp(lambda x: math.sin(math.pi * x / 2), reverse=False),
    "cosine": lambda: _ramp(lambda x: math.sin(math.pi * x / 2), reverse=True),
    "linear": lambda: _ramp(lambda x: x, reverse=False),
    "reverse_linear": lambda: _ramp(lambda x: x, reverse=True),
    "zeros": lambda: [0.0] * NUM_BLOCKS,
}


def _numbers(key: str, value: Any) -> list[float]:
    """A list of numbers, or kohya's text form `1,1,0.5,…`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(
            f"network.{key}={value!r} is not a list of numbers (write [1, 0.5, …] or '1,0.5,…')"
        ) from None


def _preset(key: str, text: str) -> list[float] | None:
    """`sine`, `cosine+.5`, …: the preset's 12 values, or None when `text` names no preset."""
    name, plus, offset = text.strip().partition("+")
    if name not in LR_PRESETS:
        return None
    try:
        extra = float(offset) if plus else 0.0
    except ValueError:
        raise ConfigError(f"network.{key}={text!r}: the part after '+' must be a number (sine+0.5)") from None
    return [weight + extra for weight in LR_PRESETS[name]()]


def side_lr_weights(key: str, value: Any) -> list[float] | None:
    """The 12 weights of `down_lr_weight` / `up_lr_weight`; fewer are filled with 1, as kohya does."""
    if value is None:
        return None
    weights = (isinstance(value, str) and _preset(key, value)) or _numbers(key, value)
    if len(weights) > NUM_BLOCKS:
        raise ConfigError(
            f"network.{key} has {len(weights)} values: give {NUM_BLOCKS} (one per block, "
            f"{'IN' if key.startswith('down') else 'OUT'}00–11) or a preset ({', '.join(LR_PRESETS)})"
        )
    weights += [1.0] * (NUM_BLOCKS - len(weights))
    if any(weight < 0 for weight in weights):
        raise ConfigError(f"network.{key}: weights must be >= 0, got {weights}")
    return weights


def block_lr_weights(net) -> list[float] | None:
    """The learning-rate weight of each of the 25 blocks, or None when no block weight is set."""
    down = side_lr_weights("down_lr_weight", net.down_lr_weight)
    up = side_lr_weights("up_lr_weight", net.up_lr_weight)
    if down is None and up is None and net.mid_lr_weight is None:
        return None
    mid = 1.0 if net.mid_lr_weight is None else float(net.mid_lr_weight)
    if mid < 0:
        raise ConfigError(f"network.mid_lr_weight={mid} must be >= 0")
    weights = (down or [1.0] * NUM_BLOCKS) + [mid] + (up or [1.0] * NUM_BLOCKS)
    threshold = net.block_lr_zero_threshold
    return [weight if weight > threshold else 0.0 for weight in weights] if threshold > 0 else weights


def _per_block(key: str, value: Any, kind: Callable[[float], float]) -> list[float] | None:
    if value is None:
        return None
    numbers = _numbers(key, value)
    if len(numbers) != ALL_BLOCKS:
        raise ConfigError(
            f"network.{key} has {len(numbers)} values: give {ALL_BLOCKS}, one per block "
            "(IN00–IN11, MID, OUT00–OUT11)"
        )
    if any(number < 0 for number in numbers):
        raise ConfigError(f"network.{key}: values must be >= 0, got {numbers}")
    return [kind(number) for number in numbers]


def block_ranks(net, spatial: bool) -> tuple[list[int], list[float]] | None:
    """(rank, alpha) of each block for Linear/1x1 layers, or with `spatial` for 3x3 convs; None = not set.

    Alphas left out default to the network's alpha (conv: conv_alpha), as in kohya; conv blocks left out
    default to conv_dim in every block once block_dims is set.
    """
    prefix = "conv_block" if spatial else "block"
    dims = _per_block(f"{prefix}_dims", getattr(net, f"{prefix}_dims"), int)
    if dims is None:
        if not (spatial and net.block_dims is not None and net.conv_dim):
            return None
        dims = [net.conv_dim] * ALL_BLOCKS
    alphas = _per_block(f"{prefix}_alphas", getattr(net, f"{prefix}_alphas"), float)
    default_alpha = net.resolved_conv_alpha if spatial else net.alpha
    return [int(d) for d in dims], alphas or [default_alpha] * ALL_BLOCKS


def block_args(net) -> dict[str, str]:
    """The block options in use, as kohya's `ss_network_args` records them (comma-separated text)."""
    args = {}
    for key in ("down_lr_weight", "up_lr_weight", "block_dims", "block_alphas", "conv_block_dims",
                "conv_block_alphas"):  # fmt: skip
        value = getattr(net, key)
        if value is not None:
            args[key] = value if isinstance(value, str) else ",".join(f"{v:g}" for v in value)
    if net.mid_lr_weight is not None:
        args["mid_lr_weight"] = f"{float(net.mid_lr_weight):g}"
    if net.block_lr_zero_threshold:
        args["block_lr_zero_threshold"] = f"{net.block_lr_zero_threshold:g}"
    return args


def target_ranks(targets: list, net) -> dict[str, tuple[int, float]]:
    """(rank, alpha) of each target path: its block's with block_dims, else dim / alpha (3x3: conv_*)."""
    linear, spatial = block_ranks(net, spatial=False), block_ranks(net, spatial=True)
    ranks = {}
    for target in targets:
        blocks = spatial if target.spatial else linear
        index = block_index(target.kohya_name) if target.component == "unet" else -1
        if blocks is not None and index >= 0:
            ranks[target.path] = (blocks[0][index], blocks[1][index])
        elif target.spatial:
            ranks[target.path] = (net.conv_dim, net.resolved_conv_alpha)
        else:
            ranks[target.path] = (net.dim, net.alpha)
    return ranks


def uses_conv_targets(net) -> bool:
    """3x3 convs get adapters with conv_dim, or with conv_block_dims."""
    return net.conv_dim > 0 or net.conv_block_dims is not None
