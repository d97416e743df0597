"""Latent caching (kohya's cache_latents / cache_latents_to_disk): each picture goes through the VAE once.

What is cached is the VAE's posterior, mean and standard deviation (scaled by the VAE's factor), not one
sample of it: each step then draws its own sample, `mean + std * randn`, from the same random stream the
uncached path uses, so caching changes the speed and not the training. With `flip_aug` the mirror image is
cached too. On disk, an entry is named by a digest of the picture's bytes, its crop (output size and box),
the flip, the VAE's weights and dtype: a changed picture, bucket or VAE gets a new entry and a stale one is
never read. Entries are written atomically, so a killed run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from data.atomic import write_bytes_atomic
from train.errors import ConfigError

CACHE_FORMAT = "lorasmith-latents-1"  # part of every key: a new format never reads old entries
Entry = tuple[Path, bool]  # (picture, flipped)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/lorasmith/latents, else ~/.cache/lorasmith/latents."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lorasmith" / "latents"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of a module's weights (names, shapes, dtypes and values): any changed weight changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}{tuple(data.shape)}{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def pixels_to_tensor(array: np.ndarray, flipped: bool) -> torch.Tensor:
    """uint8 (H, W, 3) → float (3, H, W) in [-1, 1], mirrored left-right when `flipped` (as the dataset does)."""
    if flipped:
        array = array[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 127.5 - 1.0


class LatentCache:
    """The posterior of every (picture, flipped) entry: `lookup(path, flipped)` → latent_mean, latent_std."""

    def __init__(self, entries: dict[Entry, dict[str, torch.Tensor]]) -> None:
        self.entries = entries

    def lookup(self, path: Path, flipped: bool) -> dict[str, torch.Tensor]:
        return self.entries[(Path(path), flipped)]

    def __len__(self) -> int:
        return len(self.entries)


class DiskStore:
    """Entries as `<folder>/<key[:2]>/<key>.safetensors`, keyed by content, crop, flip and VAE."""

    def __init__(self, folder: Path, vae_key: str) -> None:
        self.folder, self.vae_key = folder, vae_key
        self._digests: dict[Path, str] = {}

    def key(self, path: Path, crop: tuple, flipped: bool) -> str:
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        text = f"{CACHE_FORMAT}|{self._digests[path]}|{crop}|{int(flipped)}|{self.vae_key}"
        return hashlib.sha256(text.encode()).hexdigest()

    def file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def read(self, key: str) -> dict[str, torch.Tensor] | None:
        """The entry, or None when absent or unreadable (then it is simply encoded again)."""
        file = self.file(key)
        if not file.is_file():
            return None
        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError, ValueError):
            return None
        return tensors if {"latent_mean", "latent_std"} <= set(tensors) else None

    def write(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        try:
            write_bytes_atomic(self.file(key), save(tensors), durable=False)
        except (PermissionError, NotADirectoryError, FileExistsError) as error:
            raise ConfigError(
                f"dataset.latent_cache_dir={self.folder} cannot hold the cache ({error.strerror}): give a "
                "folder you can write, or dataset.cache_latents_to_disk=false"
            ) from error


@torch.no_grad()
def encode_posterior(vae, pixels: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (B, 3, H, W) in [-1, 1] → scaled posterior mean and std (B, 4, H/8, W/8), float32 on the CPU."""
    posterior = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    mean = (posterior.mean * scale).float().cpu().contiguous()
    std = (posterior.std * scale).float().cpu().contiguous()
    return mean, std


def _batches(entries: list[Entry], sizes: dict[Path, tuple], batch_size: int) -> Iterable[list[Entry]]:
    """Entries grouped by output size (one VAE pass needs one size), `batch_size` at a time."""
    groups: dict[tuple, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(sizes[entry[0]], []).append(entry)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def build_latent_cache(dataset, vae, scale: float, flip: bool, batch_size: int, store: DiskStore | None):
    """Encode every picture of `dataset` (and its mirror with `flip`), reusing valid disk entries.

    `dataset` gives `unique_pictures()`, `crop_plan(path)` and `pixels(path)` (uint8 of the crop).
    """
    entries = [(path, f) for path in dataset.unique_pictures() for f in ((False, True) if flip else (False,))]
    crops = {path: dataset.crop_plan(path) for path, _ in entries}
    cached: dict[Entry, dict[str, torch.Tensor]] = {}
    keys: dict[Entry, str] = {}
    if store is not None:
        for entry in tqdm(entries, desc="reading latent cache", unit="picture", leave=False):
            keys[entry] = store.key(entry[0], crops[entry[0]], entry[1])
            found = store.read(keys[entry])
            if found is not None:
                cached[entry] = found
    todo = [entry for entry in entries if entry not in cached]
    sizes = {path: crops[path][0] for path, _ in todo}
    with tqdm(total=len(todo), desc="caching latents", unit="picture", disable=not todo) as bar:
        for batch in _batches(todo, sizes, batch_size):
            pixels = torch.stack([pixels_to_tensor(dataset.pixels(path), f) for path, f in batch])
            means, stds = encode_posterior(vae, pixels, scale)
            for entry, mean, std in zip(batch, means, stds, strict=True):
                tensors = {"latent_mean": mean.clone(), "latent_std": std.clone()}
                cached[entry] = tensors
                if store is not None:
                    store.write(keys[entry], tensors)
            bar.update(len(batch))
    return LatentCache(cached), len(entries) - len(todo)
