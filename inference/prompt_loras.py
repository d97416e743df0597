"""`<lora:name:te:unet>` tags of a prompt → LoRA files in a folder, patched into the model for a render.

As in A1111, a tag names a file by its stem (`<lora:style:0.8>` → `style.safetensors`, found anywhere under
the LoRA folder), the tag is removed from the text the text encoder sees, and the infotext keeps it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from data.errors import LoraSmithError, LoraSmithWarning
from inference.components import BaseModel
from inference.extra_networks import ExtraNetworkParams, lora_multipliers
from inference.lora import LoraWeights, applied_lora, load_lora_file, lora_file_hash, lora_key_map


class LoraTagError(LoraSmithError):
    """A `<lora:…>` tag that names no file, has unreadable multipliers, or has no folder to look in."""


@dataclass(frozen=True)
class PromptLora:
    """One tag's LoRA, its multipliers and the name the tag used (what the infotext records)."""

    name: str
    weights: LoraWeights
    te_multiplier: float
    unet_multiplier: float
    short_hash: str  # A1111's addnet hash, first 12 hex digits


def lora_files(folder: str | Path) -> dict[str, Path]:
    """Every `.safetensors` file under `folder` by its stem; the first in sorted order wins a clash."""
    files: dict[str, Path] = {}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        files.setdefault(path.stem, path)
    return files


def resolve_loras(tags: list[ExtraNetworkParams], lora_dir: str | Path | None) -> list[PromptLora]:
    """Load the file and read the multipliers of each `lora` tag, in prompt order."""
    if not tags:
        return []
    if lora_dir is None:
        raise LoraTagError("the prompt has <lora:...> tags but lora_dir is not set: add lora_dir=FOLDER")
    if not Path(lora_dir).is_dir():
        raise LoraTagError(
            f"lora_dir {lora_dir} is not a folder: give the folder that holds the .safetensors"
        )
    files = lora_files(lora_dir)
    loras = []
    for tag in tags:
        try:
            name, te, unet = lora_multipliers(tag)
        except ValueError as error:
            raise LoraTagError(f"bad <lora:...> tag {':'.join(map(str, tag.items))!r}: {error}") from error
        if name not in files:
            found = ", ".join(files) or "none"
            raise LoraTagError(f"no LoRA named {name!r} in {lora_dir} (found: {found})")
        path = files[name]
        loras.append(PromptLora(name, load_lora_file(path), te, unet, lora_file_hash(path)[:12]))
    return loras


def patching_loras(model: BaseModel, loras: list[PromptLora]) -> list[PromptLora]:
    """The LoRAs that patch at least one layer of `model`; each other one is dropped with a warning.

    A file made for another architecture (an SDXL LoRA on SD 1.5) changes nothing, so it must not appear in
    the infotext's "Lora hashes" either: that would claim a LoRA shaped the picture.
    """
    keys = lora_key_map(model)
    kept = []
    for lora in loras:
        if any(key in keys for key in lora.weights.modules):
            kept.append(lora)
            continue
        warnings.warn(
            f"LoRA {lora.name} ({lora.weights.path or 'no file'}) patches no layer of this model (made for "
            f"another architecture?); it is skipped and left out of the infotext",
            LoraSmithWarning,
            stacklevel=2,
        )
    return kept


def lora_hash_entry(name: str, short_hash: str) -> str:
    """One `name: hash` item of the infotext's "Lora hashes", as A1111 writes it."""
    # A1111 removes ':' and ',' from the name, since they would break its parser.
    return f"{name.replace(':', '').replace(',', '')}: {short_hash}"


def lora_hashes(loras: list[PromptLora]) -> str | None:
    """The infotext's "Lora hashes" value, `name: hash, …` (None without LoRAs), as A1111 writes it."""
    return ", ".join(dict.fromkeys(lora_hash_entry(lora.name, lora.short_hash) for lora in loras)) or None


@contextmanager
def applied_loras(model: BaseModel, loras: list[PromptLora]) -> Iterator[None]:
    """Patch every LoRA into the model for the `with` block (their deltas add up), then restore the originals."""
    with ExitStack() as stack:
        for lora in loras:
            # Each patch backs up the weights it changes, and the stack unwinds in reverse: exact restoration.
            stack.enter_context(applied_lora(model, lora.weights, lora.te_multiplier, lora.unet_multiplier))
        yield
