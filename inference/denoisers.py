"""The denoisers samplers call: an SD UNet as D(x, sigma, cond) -> x0, and classifier-free guidance over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from inference.composable import CondsList, combine_denoised, is_plain
from inference.scheduled_conds import ScheduledConds, as_scheduled
from inference.schedules import model_sigmas, sigma_to_t
from inference.sdxl_conds import SdxlCond, cat_conds, unet_inputs


class EpsDenoiser:
    """Wrap an SD UNet as D(x, sigma, cond) -> x0 for samplers in sigma space.

    `prediction_type` is the model's: "epsilon" (SD 1.x, SD 2.x base) or "v_prediction" (SD 2.x 768-v), as
    diffusers' scheduler configs name it.
    """

    def __init__(self, unet: Any, alphas_cumprod: Tensor, prediction_type: str = "epsilon") -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {prediction_type!r} is not epsilon or v_prediction")
        self.unet = unet
        self.prediction_type = prediction_type
        # Read once: diffusers' `dtype` property walks every submodule (≈ 1.7 ms a call on the toy UNet).
        self.dtype = (
            next((p.dtype for p in unet.parameters()), torch.float32) if hasattr(unet, "parameters") else None
        )
        self.sigmas = model_sigmas(alphas_cumprod.float())
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        """Smallest training noise level (about 0.0292 for SD 1.x)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest training noise level (about 14.6146 for SD 1.x)."""
        return float(self.sigmas[-1])

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor | SdxlCond) -> Tensor:
        """x: (B, 4, h, w) noisy latents, sigma: (B,), cond: (B, L, D) or SdxlCond → x0 (B, 4, h, w)."""
        return self.denoise_at(x, sigma, sigma_to_t(sigma, self.log_sigmas.to(sigma.device)), cond)

    def denoise_at(self, x: Tensor, sigma: Tensor, t: Tensor, cond: Tensor | SdxlCond) -> Tensor:
        """As calling the denoiser, but the UNet is told timestep t: (B,) rather than the one sigma maps to."""
        # The UNet was trained on unit-variance inputs x_t = sqrt(a) x0 + sqrt(1-a) eps, i.e. x / sqrt(sigma²+1).
        c_in = (sigma**2 + 1).rsqrt().reshape(-1, 1, 1, 1)
        dtype = self.dtype or x.dtype
        out = self.unet((x * c_in).to(dtype), t, **unet_inputs(cond, dtype)).sample.to(x.dtype)
        sigma = sigma.reshape(-1, 1, 1, 1)
        if (
            self.prediction_type == "v_prediction"
        ):  # v = sqrt(a) eps - sqrt(1-a) x0 on the unit-variance input
            return x * c_in**2 - out * sigma * c_in
        return x - out * sigma


class CFGDenoiser:
    """Classifier-free guidance: uncond + scale * (cond - uncond), both halves in one UNet call.

    `cond` and `uncond`: (B, L, D) tensors, or `ScheduledConds` for prompt editing. With AND, `cond` has a
    row per subprompt (R in all) and `conds_list` says which rows guide each image (`inference.composable`).
    `step` counts the calls so far, as A1111's CFG denoiser does (once per call, so twice in a step of a
    second-order sampler); schedules are read at it, and the batched conditioning is rebuilt only when a
    row changes.
    """

    def __init__(
        self,
        denoiser: Callable[[Tensor, Tensor, Tensor], Tensor],
        cond: Tensor | ScheduledConds,
        uncond: Tensor | ScheduledConds,
        scale: float,
        per_image: bool = False,
        conds_list: CondsList | None = None,
    ) -> None:
        cond, uncond = as_scheduled(cond), as_scheduled(uncond)
        # AND (inference.composable): which cond rows guide each image, at what weight; row i alone by default.
        self.conds_list = conds_list or tuple(((i, 1.0),) for i in range(uncond.batch_size))
        cond_shape = (cond.batch_size, *cond.encodings.shape[1:])
        expected = (sum(len(conds) for conds in self.conds_list), *uncond.encodings.shape[1:])
        if cond_shape != expected or uncond.batch_size != len(self.conds_list):
            uncond_shape = (uncond.batch_size, *uncond.encodings.shape[1:])
            raise ValueError(f"cond {cond_shape} and uncond {uncond_shape} must match to batch")
        self.denoiser = denoiser
        self.cond, self.uncond = cond, uncond
        self.scale = scale
        self.per_image = per_image
        self.step = 0
        self.last_uncond: Tensor | None = None  # the last call's unconditional x0, for DDIM CFG++
        self._plain = is_plain(self.conds_list)
        self._image_of_row = [i for i, conds in enumerate(self.conds_list) for _ in conds]
        self._fixed = cond.is_fixed and uncond.is_fixed
        self._rows = self._rows_at(0)
        self.cond_in = self._batch(self._rows)  # (B+R, L, D): uncond then cond, at the current step

    def _rows_at(self, step: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.uncond.rows_at(step), self.cond.rows_at(step)

    def _batch(self, rows: tuple[tuple[int, ...], tuple[int, ...]]) -> Tensor | SdxlCond:
        return cat_conds([self.uncond.select(rows[0]), self.cond.select(rows[1])])

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: (B, C, H, W), sigma: (B,) → guided denoised x0 (B, C, H, W)."""
        if not self._fixed:
            rows = self._rows_at(self.step)
            if rows != self._rows:
                self._rows, self.cond_in = rows, self._batch(rows)
        if self.per_image and len(x) > 1:
            uncond, cond = self._each_image(x, sigma)
        elif self._plain:
            uncond, cond = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), self.cond_in).chunk(2)
        else:  # each image once for its uncond, then once per subprompt
            rows = self._image_of_row
            out = self.denoiser(torch.cat([x, x[rows]]), torch.cat([sigma, sigma[rows]]), self.cond_in)
            uncond, cond = out[: len(x)], out[len(x) :]
        self.step += 1
        self.last_uncond = uncond
        if self._plain:
            return uncond + (cond - uncond) * self.scale
        return combine_denoised(uncond, cond, self.conds_list, self.scale)

    def _each_image(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """One UNet call per image, on the very rows (uncond, then its conds) it gets alone: (B, ...), (R, ...)."""
        size, outputs = len(x), []
        for i, conds in enumerate(self.conds_list):
            rows = torch.tensor([i, *(size + row for row, _ in conds)], device=self.cond_in.device)
            image = torch.cat([x[i : i + 1]] * len(rows))
            outputs.append(
                self.denoiser(image, torch.cat([sigma[i : i + 1]] * len(rows)), self.cond_in[rows])
            )
        return torch.cat([out[:1] for out in outputs]), torch.cat([out[1:] for out in outputs])
