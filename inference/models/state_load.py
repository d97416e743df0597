"""Build a model from its config and fill it with a converted state dict, with errors that say what differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import init_empty_weights

from inference.models.errors import ModelLoadError

M = TypeVar("M", bound=torch.nn.Module)


def build_with_weights(
    factory: Callable[[], M], state: dict[str, torch.Tensor], what: str, path: Path, hint: str
) -> M:
    """`factory()` built without random init, holding exactly the tensors of `state` (as float32).

    `what` names the part (e.g. "UNet") and `hint` says how to fix a mismatch; both go into the error.
    """
    with init_empty_weights(include_buffers=False):  # weights come from `state`; skip the random init
        model = factory()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ModelLoadError(_mismatch(what, path, missing, unexpected, hint))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:  # shapes that differ from the config
        detail = str(error).strip().splitlines()[1:3]
        raise ModelLoadError(
            f"the {what} weights in {path} do not fit its architecture: {' '.join(detail)}. {hint}"
        ) from error
    return model.eval()


def _mismatch(what: str, path: Path, missing: list[str], unexpected: list[str], hint: str) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return f"the {what} weights in {path} do not match its architecture: {'; '.join(parts)}. {hint}"
