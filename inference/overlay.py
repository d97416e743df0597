"""Putting an inpainted render back: A1111's resize modes for the crop, the uncrop and the overlay of the
original pixels outside the mask (apply_overlay)."""

from __future__ import annotations

from PIL import Image, ImageOps

from inference.upscalers import lanczos

Paste = tuple[int, int, int, int]  # (x, y, width, height) of the render inside the full picture


def resize_and_fill(image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize mode 2 ("Resize and fill"): fit inside width x height, centred, the gaps filled by
    stretching the picture's edge rows (or columns). An RGB image out, as A1111's (masks too)."""
    ratio, source_ratio = width / height, image.width / image.height
    fit_w = width if ratio < source_ratio else image.width * height // image.height
    fit_h = height if ratio >= source_ratio else image.height * width // image.width
    resized = lanczos(image, fit_w, fit_h)
    out = Image.new("RGB", (width, height))
    out.paste(resized, (width // 2 - fit_w // 2, height // 2 - fit_h // 2))
    if ratio < source_ratio and (gap := height // 2 - fit_h // 2) > 0:
        out.paste(resized.resize((width, gap), box=(0, 0, width, 0)), (0, 0))
        out.paste(resized.resize((width, gap), box=(0, fit_h, width, fit_h)), (0, gap + fit_h))
    elif ratio > source_ratio and (gap := width // 2 - fit_w // 2) > 0:
        out.paste(resized.resize((gap, height), box=(0, 0, 0, height)), (0, 0))
        out.paste(resized.resize((gap, height), box=(fit_w, 0, fit_w, height)), (gap + fit_w, 0))
    return out


def crop_and_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize mode 1 ("Crop and resize"): cover width x height, centred, the overflow cut off."""
    ratio, source_ratio = width / height, image.width / image.height
    cover_w = width if ratio > source_ratio else image.width * height // image.height
    cover_h = height if ratio <= source_ratio else image.height * width // image.width
    out = Image.new("RGB", (width, height))
    out.paste(lanczos(image, cover_w, cover_h), (width // 2 - cover_w // 2, height // 2 - cover_h // 2))
    return out


def overlay_image(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original pixels to lay over a render: RGBA, opaque where the overlay mask is 0, clear at 255.

    Made through Pillow's premultiplied "RGBa" as A1111 makes it, so soft edges round as A1111's do.
    """
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return kept.convert("RGBA")


def apply_overlay(render: Image.Image, overlay: Image.Image, paste: Paste | None = None) -> Image.Image:
    """The finished picture: `render` (moved into place at `paste` for "Only masked"), the overlay on top."""
    if paste is not None:
        x, y, width, height = paste
        placed = Image.new("RGBA", overlay.size)
        placed.paste(crop_and_resize(render, width, height), (x, y))
        render = placed
    out = render.convert("RGBA")
    out.alpha_composite(overlay)
    return out.convert("RGB")
