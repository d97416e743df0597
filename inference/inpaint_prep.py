"""The pixel side of A1111's inpainting (StableDiffusionProcessingImg2Img.init): the mask and the picture as
the sampler and the final overlay need them, and the infotext keys the settings add.

Order, as A1111: binarize the mask, invert it ("Inpaint not masked"), blur it; then either resize it to the
render size ("Whole picture", where the overlay keeps the original wherever the blurred mask is under half)
or crop the box around it, grown by the padding and to the render's aspect ratio, and render that box at
full size ("Only masked", where the overlay follows the blurred mask itself). The picture the sampler
starts from is filled under the mask unless the masked content is "original".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from inference.inpaint_config import FILL_MODES, InpaintConfig
from inference.masking import binary_mask, blur_mask, crop_region, expand_crop_region, fill
from inference.overlay import Paste, overlay_image, resize_and_fill
from inference.upscalers import lanczos

log = logging.getLogger(__name__)


@dataclass
class MaskedInit:
    """The picture to encode (width x height), and for inpainting the mask at that size, the overlay of the
    original pixels (full output size) and where the render goes back for "Only masked"."""

    image: Image.Image  # RGB, width x height, masked content filled in (fill modes other than "original")
    mask: Image.Image | None = None  # "L", width x height, white = repainted (blurred, not rounded)
    overlay: Image.Image | None = None  # RGBA at the output size: the original where it is kept
    paste: Paste | None = None  # (x, y, w, h) of the render in the output ("Only masked")
    fields: dict[str, Any] = field(default_factory=dict)  # the infotext keys A1111 adds, in its order


def _prepared_mask(
    mask: Image.Image, size: tuple[int, int], config: InpaintConfig, fields: dict
) -> Image.Image:
    """The binarized, inverted and blurred mask at the picture's `size` (a mask of another size is resized)."""
    mask = binary_mask(mask)
    if mask.size != size:
        mask = lanczos(mask, *size)
    if config.invert:
        mask = ImageOps.invert(mask)
        fields["Mask mode"] = "Inpaint not masked"
    if config.mask_blur > 0:
        mask = blur_mask(mask, config.mask_blur, config.mask_blur)
        fields["Mask blur"] = config.mask_blur
    return mask


def _doubled(mask: Image.Image) -> Image.Image:
    """The "Whole picture" overlay mask: twice the blurred mask, so the render shows fully from half on."""
    values = np.clip(np.asarray(mask.convert("L"), dtype=np.float32) * 2, 0, 255).astype(np.uint8)
    return Image.fromarray(values, mode="L")


def prepare_masked_init(
    init: Image.Image, mask: Image.Image | None, config: InpaintConfig, width: int, height: int
) -> MaskedInit:
    """`init` (and `mask`, None for plain img2img) made ready for a render of width x height."""
    init = init.convert("RGB")
    if mask is None:
        return MaskedInit(lanczos(init, width, height))
    fields: dict[str, Any] = {}
    mask = _prepared_mask(mask, init.size, config, fields)
    region = None
    if config.only_masked:
        region = crop_region(mask, config.inpaint_full_res_padding)
        if region is None:  # nothing to repaint: A1111 renders plain img2img of the whole picture
            log.info('The mask is empty: "Only masked" cannot crop to it, so the picture is rendered whole')
            return MaskedInit(lanczos(init, width, height))
        region = expand_crop_region(region, width, height, *init.size)
        overlay_mask = mask
        render_mask = resize_and_fill(mask.crop(region), width, height).convert("L")
        fields["Inpaint area"] = "Only masked"
        fields["Masked area padding"] = config.inpaint_full_res_padding
        image = init
    else:
        render_mask = lanczos(mask, width, height)
        overlay_mask = _doubled(render_mask)
        image = lanczos(init, width, height)
    overlay = overlay_image(image, overlay_mask)
    paste = None
    if region is not None:
        x1, y1, x2, y2 = region
        image, paste = resize_and_fill(image.crop(region), width, height), (x1, y1, x2 - x1, y2 - y1)
    if config.fill_mode != 1:  # every mode but "original" starts from the filled picture, as A1111's
        image = fill(image, render_mask)
        fields["Masked content"] = FILL_MODES[config.fill_mode]
    return MaskedInit(image, render_mask, overlay, paste, fields)
