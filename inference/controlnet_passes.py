"""ControlNet units for each sampling pass of a render, as A1111's ControlNet extension applies them beyond
txt2img.

img2img and inpainting: one pass at the render size. The guidance window is a fraction of the steps that
img2img samples, not of `steps`: A1111 starts that sampling with `state.sampling_steps = t_enc + 1` and
`state.sampling_step = 0` (launch_sampling), and the extension reads `sampling_step / sampling_steps`.

Hires fix: the first pass has maps at the first pass's size, the second pass maps at the hires size (the
same preprocessed map fitted to that size). A unit's `hr_option` picks the passes it controls ("Both",
"Low res only", "High res only"). The extension tells the passes apart by the latent height: a pass is the
hires one unless its height is nearer the first pass's map than the hires map, so when both maps have the
same height both passes count as hires. In the hires pass, canny and mlsd units are forced to the soft
per-block weights (the extension's high_res_fix_forced_soft_injection); the hires pass's window counts
the hires steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.components import BaseModel
from inference.controlnet import ActiveUnit, ControlledUNet, with_unet

BOTH, LOW_RES_ONLY, HIGH_RES_ONLY = "Both", "Low res only", "High res only"
HR_OPTIONS = (BOTH, LOW_RES_ONLY, HIGH_RES_ONLY)  # the extension's HiResFixOption values
FORCED_SOFT_MODULES = ("canny", "mlsd")  # preprocessor names the extension softens in the hires pass


def runs_in_pass(hr_option: str, hires_pass: bool) -> bool:
    """Whether a unit with `hr_option` controls a pass of a hires-fix render (disabled_by_hr_option)."""
    if hr_option == LOW_RES_ONLY:
        return not hires_pass
    if hr_option == HIGH_RES_ONLY:
        return hires_pass
    return True


def hires_control_mode(module: str, control_mode: str) -> str:
    """The control mode a unit runs with in the hires pass.

    A Balanced canny or mlsd unit gets the soft per-block scales there, and nothing else of the soft modes:
    that is "My prompt is more important" (soft scales, no cfg injection); the other modes are soft already.
    """
    if control_mode == "Balanced" and any(name in module for name in FORCED_SOFT_MODULES):
        return "My prompt is more important"
    return control_mode


def first_pass_is_hires(height: int, hires_height: int | None) -> bool:
    """The extension's pass test for the first pass: a pass of height h is the low-res one only when
    |h - low map height| < |h - hires map height|, which for h = the low height fails only when the
    hires map has the same height."""
    return hires_height == height


@dataclass
class PassControl:
    """The units of each pass: `first` (txt2img, img2img, inpainting, the hires fix's first pass) and
    `hires` (the hires pass, maps at the hires size)."""

    first: list[ActiveUnit]
    hires: list[ActiveUnit] = field(default_factory=list)

    def controlled(
        self, model: BaseModel, total_steps: int, hires_pass: bool = False
    ) -> tuple[BaseModel, ControlledUNet]:
        """`model` with its UNet under this pass's units, and the wrapper: pass its `on_step` as the
        sampler's callback. `total_steps`: A1111's `state.sampling_steps` for the pass (txt2img: steps;
        img2img and the hires pass: t_enc + 1)."""
        controlled = ControlledUNet(model.unet, self.hires if hires_pass else self.first, total_steps)
        return with_unet(model, controlled), controlled
