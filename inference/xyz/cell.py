"""What one X/Y/Z plot cell renders: its generation params, the model and networks it needs, its mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.errors import LoraSmithError
from inference.controlnet_units import ControlNetUnit
from inference.hires import HiresParams
from inference.txt2img import GenerationParams


class XYZError(LoraSmithError):
    """An X/Y/Z plot that cannot be drawn: an unknown axis, values it cannot take, a missing file."""


@dataclass
class Cell:
    """One cell's recipe; the axes change it, starting from the plot's settings.

    `checkpoint`: None for the given base model, else a model to load (a file, folder or built-in name).
    `networks`: LoRA files patched in at `lora_weight`. `denoising`: img2img's strength (with an init
    image), `hires`: the hires fix's settings (None: no hires pass). `controlnet`: ControlNet units (txt2img).
    """

    params: GenerationParams
    checkpoint: str | None = None
    networks: list[Path] = field(default_factory=list)
    lora_weight: float = 1.0
    init_image: Path | None = None
    denoising: float = 0.75
    hires: HiresParams | None = None
    controlnet: list[ControlNetUnit] = field(default_factory=list)

    def patch_key(self) -> tuple:
        """Cells with equal keys render with the same model and the same patches."""
        return (self.checkpoint or "", tuple(str(path) for path in self.networks), self.lora_weight)

    def batch_key(self) -> tuple:
        """Cells with equal keys (and patch keys) can share one sampling pass."""
        p = self.params
        shared = (p.steps, p.cfg_scale, p.width, p.height, p.clip_skip, p.emphasis, p.comma_backtrack)
        hires = None if self.hires is None else tuple(vars(self.hires).items())
        units = tuple(repr(unit) for unit in self.controlnet)
        return (*shared, p.resolve(), p.exact_batch, self.denoising, hires, units)
