"""Upscaling a picture with an upscaler network, as A1111 does (modules/upscaler.py, upscaler_utils.py).

A pass feeds the network the picture as BGR floats in [0, 1] (A1111 flips the channels on the way in and
back on the way out) and truncates the clamped output to 8 bits. With a tile size above 0 the picture is cut
into tile x tile squares that overlap by `overlap` pixels (A1111's `ESRGAN_tile` 192 and `ESRGAN_tile_overlap`
8), each is upscaled alone, and the results are pasted back with a linear blend across the overlap. A tile
does not see its neighbours, so pixels within the network's reach of a tile edge differ from an untiled pass;
the blend hides the seam, it does not remove the difference.

`upscale_by` repeats passes until the size reaches scale x the input rounded down to multiples of 8 (at
most 3 passes), then resizes to that size with Lanczos, as A1111's `Upscaler.upscale`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from inference.upscaler_files import find_upscaler_file, load_upscaler_network, upscaler_names

ESRGAN_TILE = 192  # A1111's default "Tile size for ESRGAN upscalers"; 0 upscales in one pass
ESRGAN_TILE_OVERLAP = 8  # its default "Tile overlap for ESRGAN upscalers", in input pixels

Tile = tuple[int, Image.Image]  # x, tile
TileRow = tuple[int, list[Tile]]  # y, tiles


def network_pass(network: nn.Module, image: Image.Image) -> Image.Image:
    """One untiled pass: an RGB picture (w, h) → the network's output picture (w*s, h*s), 8 bits."""
    parameter = next(network.parameters())
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1))
    x = torch.from_numpy(bgr).float().div(255).unsqueeze(0).to(parameter.device, parameter.dtype)
    with torch.no_grad():
        out = network(x)[0].float().cpu().clamp_(0, 1)
    # A1111 truncates (numpy's astype), it does not round.
    pixels = (255.0 * out.numpy().transpose(1, 2, 0)).astype(np.uint8)[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def split_tiles(image: Image.Image, tile: int, overlap: int) -> list[TileRow]:
    """Cut `image` into rows of tile x tile crops spaced evenly, the last ones flush with the far edges.

    A picture smaller than a tile gives one crop that starts before it (the part outside is black), as
    A1111's split_grid does.
    """
    w, h = image.size
    cols = max(1, math.ceil((w - overlap) / (tile - overlap)))
    rows = max(1, math.ceil((h - overlap) / (tile - overlap)))
    dx = (w - tile) / (cols - 1) if cols > 1 else 0
    dy = (h - tile) / (rows - 1) if rows > 1 else 0
    grid = []
    for row in range(rows):
        y = h - tile if int(row * dy) + tile >= h else int(row * dy)
        tiles = []
        for col in range(cols):
            x = w - tile if int(col * dx) + tile >= w else int(col * dx)
            tiles.append((x, image.crop((x, y, x + tile, y + tile))))
        grid.append((y, tiles))
    return grid


def _ramp(overlap: int, length: int, vertical: bool) -> Image.Image:
    """A paste mask rising linearly from 0 over `overlap` pixels (columns, or rows when vertical)."""
    ramp = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    mask = np.repeat(ramp[:, None], length, 1) if vertical else np.repeat(ramp[None, :], length, 0)
    return Image.fromarray(mask, "L")


def combine_tiles(grid: list[TileRow], width: int, height: int, tile: int, overlap: int) -> Image.Image:
    """Paste tiles (tile x tile) back into a width x height picture, blending each over the previous one
    across `overlap` pixels: along a row first, then row over row (A1111's combine_grid)."""
    across, down = _ramp(overlap, tile, vertical=False), _ramp(overlap, width, vertical=True)
    combined = Image.new("RGB", (width, height))
    for y, tiles in grid:
        row = Image.new("RGB", (width, tile))
        for x, piece in tiles:
            if x == 0:
                row.paste(piece, (0, 0))
                continue
            row.paste(piece.crop((0, 0, overlap, tile)), (x, 0), mask=across)
            row.paste(piece.crop((overlap, 0, tile, tile)), (x + overlap, 0))
        if y == 0:
            combined.paste(row, (0, 0))
            continue
        combined.paste(row.crop((0, 0, width, overlap)), (0, y), mask=down)
        combined.paste(row.crop((0, overlap, width, tile)), (0, y + overlap))
    return combined


def upscale_with_network(network: nn.Module, image: Image.Image, tile: int, overlap: int) -> Image.Image:
    """One network pass over `image`, in tiles when `tile` > 0: (w, h) → (w*s, h*s)."""
    if tile <= 0:
        return network_pass(network, image)
    grid = split_tiles(image, tile, overlap)
    scale = 1
    upscaled: list[TileRow] = []
    for y, tiles in grid:
        row = []
        for x, piece in tiles:
            out = network_pass(network, piece)
            scale = out.width // piece.width
            row.append((x * scale, out))
        upscaled.append((y * scale, row))
    return combine_tiles(upscaled, image.width * scale, image.height * scale, tile * scale, overlap * scale)


def upscale_by(
    image: Image.Image, scale: float, one_pass: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    """`image` → (int(w*scale)//8*8, int(h*scale)//8*8): up to 3 passes, then Lanczos to the exact size."""
    target = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
    for _ in range(3):
        before = image.size
        image = one_pass(image)
        if image.size == before or (image.width >= target[0] and image.height >= target[1]):
            break
    return image if image.size == target else image.resize(target, resample=Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class ModelUpscaler:
    """An upscaler file by its A1111 name (the file name without suffix), with A1111's tile settings."""

    name: str
    path: str
    tile: int = ESRGAN_TILE
    overlap: int = ESRGAN_TILE_OVERLAP

    def network(self, device: str | torch.device = "cpu") -> nn.Module:
        """The file's network on `device` (the file is read once while it stays unchanged)."""
        return load_upscaler_network(self.path).to(device)

    def upscale(self, image: Image.Image, scale: float, device: str | torch.device = "cpu") -> Image.Image:
        """A1111's `Upscaler.upscale`: (w, h) → (int(w*scale)//8*8, int(h*scale)//8*8)."""
        network = self.network(device)
        return upscale_by(
            image.convert("RGB"), scale, lambda im: upscale_with_network(network, im, self.tile, self.overlap)
        )

    def resize(
        self, image: Image.Image, width: int, height: int, device: str | torch.device = "cpu"
    ) -> Image.Image:
        """A1111's resize_image "Just resize" with this upscaler: the network only when enlarging, then
        Lanczos to exactly width x height."""
        scale = max(width / image.width, height / image.height)
        if scale > 1.0:
            image = self.upscale(image, scale, device)
        if image.size != (width, height):
            image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
        return image


def check_tiles(tile: int, overlap: int) -> None:
    """Raise ValueError for tile settings no tiling can use."""
    if tile < 0 or overlap < 0 or (tile > 0 and overlap >= tile):
        raise ValueError(
            f"upscaler_tile ({tile}) and upscaler_tile_overlap ({overlap}) must be 0 or more, the overlap "
            "smaller than the tile (tile 0: no tiling)"
        )


def find_model_upscaler(name: str, folder: str | Path, tile: int, overlap: int) -> ModelUpscaler | None:
    """The upscaler file called `name` in `folder`, read and recognised; None when no file has that name.

    A file of an unknown architecture raises ConfigError naming it.
    """
    path = find_upscaler_file(name, folder)
    if path is None:
        return None
    load_upscaler_network(path)  # fail now, not after the first pass
    return ModelUpscaler(name, str(path), tile, overlap)


def missing_upscaler(key: str, name: str, folder: str | Path, built_in: tuple[str, ...]) -> str:
    """The message for an upscaler name that is neither built in nor a file in `folder`."""
    files = ", ".join(upscaler_names(folder)) or "none"
    return (
        f"unknown {key} {name!r}: not one of {', '.join(built_in)} and no {name}.pth, .pt or .safetensors in "
        f"upscaler_dir={folder} (upscaler files there: {files})"
    )
