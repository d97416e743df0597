"""Read the tensors of a single-file checkpoint (`.safetensors`, or a pickle loaded weights-only).

Pickled checkpoints (`.ckpt`, `.pt`, `.bin`) go through `torch.load(..., weights_only=True)` only: a file
that needs code to unpickle is refused, never run. The result is a flat `{key: tensor}` dict, with the
`state_dict` wrapper of PyTorch Lightning files removed, as AUTOMATIC1111 does.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from inference.models.errors import ModelLoadError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
SINGLE_FILE_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint at `path`, keyed as stored (CPU, stored dtype)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"single-file checkpoint {path} does not exist (or is not a file). Give the path of a "
            f"{' / '.join(SINGLE_FILE_SUFFIXES)} file, a diffusers folder or a hub id."
        )
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        loaded = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        loaded = _read_pickle(path)
    else:
        raise ModelLoadError(
            f"{path}: unknown checkpoint type {suffix!r}; expected one of {', '.join(SINGLE_FILE_SUFFIXES)}."
        )
    return _unwrap(loaded, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"{path} is not a readable .safetensors checkpoint ({error}). Check that the download finished "
            "and that the file is a Stable Diffusion model."
        ) from error


def _is_torch_file(path: Path) -> bool:
    """torch.save's zip archive, or its older format: a pickle, whose first byte is the protocol mark 0x80."""
    with open(path, "rb") as handle:
        return zipfile.is_zipfile(handle) or handle.seek(0) == 0 and handle.read(1) == b"\x80"


def _read_pickle(path: Path) -> object:
    if not _is_torch_file(path):  # else torch's "weights only load failed" would blame code, not the bytes
        raise _not_a_checkpoint(path, ValueError("neither a zip archive nor a pickle"))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise _not_a_checkpoint(path, error) from error
        raise ModelLoadError(
            f"{path} was refused: unpickling it needs code that is not plain tensors (a pickle can run "
            "anything when loaded, so it was not loaded). Load only files you trust, and prefer "
            ".safetensors: convert a trusted .ckpt once with a tool you trust, or download the "
            ".safetensors version of the model."
        ) from error
    except Exception as error:  # torch.load raises many types for files that are not checkpoints
        raise _not_a_checkpoint(path, error) from error


def _not_a_checkpoint(path: Path, error: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]}). Check that the "
        "download finished and that the file is a Stable Diffusion model or VAE."
    )


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The flat tensor dict inside `loaded`: Lightning's `state_dict` wrapper removed, non-tensors dropped."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelLoadError(
            f"{path} holds a {type(loaded).__name__}, not a dict of tensors; it is not a model checkpoint."
        )
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path} holds no tensors; it is not a model checkpoint.")
    return tensors
