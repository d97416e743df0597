"""ControlNet in the engine, as A1111's ControlNet extension applies it: a UNet wrapper that adds each active
unit's residuals, scaled per block for its control mode, inside the guidance window of the sampling steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from inference.components import BaseModel, vae_scale_factor
from inference.embeddings import EmbeddingDatabase
from inference.sampler_names import run_sampler
from inference.txt2img import GenerationParams, decode_latents, prepare_sampling

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
SOFT_INJECTION_BASE = 0.825  # the extension's per-block decay for the soft-injection modes


def control_scales(weight: float, control_mode: str, count: int = 13) -> list[float]:
    """The factor for each of `count` ControlNet outputs (down blocks in order, the middle block last).

    Balanced: `weight` everywhere. Both other modes ("soft injection"): weight * 0.825 ** (count - 1 - i), so
    the middle block keeps the full weight and the first input block about a tenth (SD 1.x has 13 outputs,
    the extension's `0.825 ** (12 - i)`; smaller UNets keep the middle block at 1 the same way).
    """
    if control_mode not in CONTROL_MODES:
        raise ValueError(f"unknown control_mode {control_mode!r}; use one of {', '.join(CONTROL_MODES)}")
    if control_mode == "Balanced":
        return [weight] * count
    return [weight * SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]


def guidance_active(sampling_step: int, total_steps: int, start: float, end: float) -> bool:
    """Whether a unit applies at A1111's `state.sampling_step` of `total_steps` (the extension's test).

    `sampling_step` is the index the sampler last reported (0 before the first report), so during step i > 0
    it is i - 1: a unit with guidance_start 0.5 over 10 steps first acts at step 6.
    """
    percent = sampling_step / total_steps
    return not (percent < start or percent > end)


@dataclass
class ActiveUnit:
    """One ControlNet ready to run: its model, its hint (1, 3, H, W) in [0, 1], and how it is applied."""

    model: nn.Module  # diffusers' ControlNetModel
    hint: Tensor
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"

    def residuals(self, x: Tensor, t: Tensor, context: Tensor, cond_mark: Tensor) -> list[Tensor]:
        """The unit's scaled outputs for x: (N, 4, h, w): the down-block residuals, then the middle block's."""
        hint = self.hint.to(x.device, x.dtype).expand(len(x), -1, -1, -1)
        down, mid = self.model(
            x,
            t,
            encoder_hidden_states=context,
            controlnet_cond=hint,
            conditioning_scale=1.0,
            return_dict=False,
        )
        outputs = [*down, mid]
        if self.control_mode == "ControlNet is more important":
            # The extension's cfg injection: the negative prompt's half sees no control, so guidance pushes
            # towards it.
            outputs = [out * cond_mark for out in outputs]
        scales = control_scales(self.weight, self.control_mode, len(outputs))
        return [out * scale for out, scale in zip(outputs, scales, strict=True)]


class ControlledUNet(nn.Module):
    """The UNet with ControlNet units, called as the UNet is: (x, t, encoder_hidden_states=...) → .sample.

    Batches come from `CFGDenoiser`: with an even count the first half is the negative prompt's. The
    sampler's callback (`on_step`) moves the step that the guidance windows are read at, as A1111's
    sampler callback moves `state.sampling_step`.
    """

    def __init__(self, unet: nn.Module, units: list[ActiveUnit], total_steps: int) -> None:
        super().__init__()
        self.unet = unet
        self.controlnets = nn.ModuleList([unit.model for unit in units])
        self.units = units
        self.total_steps = total_steps
        self.sampling_step = 0
        self.calls: list[int] = []  # how many units ran at each call, for inspection

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def on_step(self, info: dict[str, Any]) -> None:
        """Sampler callback: the step just finished becomes A1111's `state.sampling_step`."""
        self.sampling_step = int(info["i"])

    def forward(self, x: Tensor, t: Tensor, encoder_hidden_states: Tensor, **kwargs: Any) -> Any:
        """x: (N, 4, h, w), t: (N,), encoder_hidden_states: (N, L, D) → the UNet's output with control."""
        cond_mark = torch.ones(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)
        if len(x) % 2 == 0:
            cond_mark[: len(x) // 2] = 0
        total: list[Tensor] | None = None
        ran = 0
        for unit in self.units:
            if not guidance_active(
                self.sampling_step, self.total_steps, unit.guidance_start, unit.guidance_end
            ):
                continue
            outputs = unit.residuals(x, t, encoder_hidden_states, cond_mark)
            total = outputs if total is None else [a + b for a, b in zip(total, outputs, strict=True)]
            ran += 1
        self.calls.append(ran)
        if total is None:
            return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, **kwargs)
        return self.unet(
            x, t, encoder_hidden_states=encoder_hidden_states, down_block_additional_residuals=total[:-1],
            mid_block_additional_residual=total[-1], **kwargs,
        )  # fmt: skip


@dataclass
class _WithUNet:
    """A base model whose UNet is replaced (the other parts are the model's own)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any


def with_unet(model: BaseModel, unet: Any) -> BaseModel:
    """`model` with `unet` in place of its UNet."""
    return _WithUNet(unet, model.vae, model.text_encoder, model.tokenizer, model.noise_scheduler)


def sample_controlled_latents(
    model: BaseModel,
    batch: list[GenerationParams],
    units: list[ActiveUnit],
    embeddings: EmbeddingDatabase | None = None,
) -> tuple[Tensor, ControlledUNet]:
    """txt2img latents with the units applied: (B, 4, H/8, W/8), and the wrapper (its `calls` per step)."""
    controlled = ControlledUNet(model.unet, units, batch[0].steps)
    setup = prepare_sampling(with_unet(model, controlled), batch, embeddings)
    latents = run_sampler(
        setup.spec, setup.denoise, setup.noise, batch[0].steps, setup.model_sigmas, setup.schedule,
        callback=controlled.on_step,
    )  # fmt: skip
    return latents, controlled


def generate_controlled_batch(
    model: BaseModel,
    batch: list[GenerationParams],
    units: list[ActiveUnit],
    embeddings: EmbeddingDatabase | None = None,
) -> list[Image.Image]:
    """Render a txt2img batch with ControlNet units (their residuals summed), one sampling pass."""
    for params in batch:
        params.validate(vae_scale_factor(model))
    with torch.no_grad():
        latents, _ = sample_controlled_latents(model, batch, units, embeddings)
        return decode_latents(model, latents)
