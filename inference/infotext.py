"""A1111 infotext: the generation parameters as text, stored in a PNG's `parameters` chunk ("PNG Info")."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from data.atomic import write_bytes_atomic
from inference.hires import HiresParams
from inference.prompts import parse_prompt_attention
from inference.sampler_names import get_sampler_and_scheduler
from inference.txt2img import GenerationParams

# A1111's fixed key order; extra keys that appear here take this position, all others follow in order given.
FIXED_KEYS = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
    "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength", "Conditional mask weight", "Clip skip",
    "ENSD", "Token merging ratio", "Token merging ratio hr", "Init image hash", "RNG", "Tiling",
)  # fmt: skip

NEGATIVE_PREFIX = "Negative prompt:"
# One `key: value` pair of the parameter line; a value is a JSON string or runs to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# What A1111 assumes when a key is absent, so parsed dicts of old and new images look alike.
_PARSE_DEFAULTS = {"Clip skip": "1", "Schedule type": "Automatic", "RNG": "GPU"}


def format_number(value: float) -> str:
    """Whole floats without a fraction (7.0 → "7"), as A1111's UI numbers appear; others as Python writes them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def quote(value: Any) -> str:
    """A value as A1111 writes it: JSON-quoted if it holds a comma, colon or newline, else raw."""
    text = format_number(value) if isinstance(value, float) else str(value)
    if any(mark in text for mark in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def _has_brackets(params: GenerationParams) -> bool:
    """A1111's test for writing "Emphasis": a bracket in the prompt or the negative prompt."""
    return any(mark in text for text in (params.prompt, params.negative_prompt) for mark in "([")


def infotext_fields(params: GenerationParams, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameter line's key → value pairs in A1111 order; None values are left out."""
    _, schedule = params.resolve()
    fields: dict[str, Any] = {
        "Steps": params.steps,
        "Sampler": params.sampler,
        # What the sampler ran with: A1111 records the sampler's default for "Automatic" where it has one
        # (DPM++ 2M: "Karras"), and "Automatic" for samplers without one (Euler, DDIM).
        "Schedule type": schedule,
        "CFG scale": params.cfg_scale,
        "Seed": params.seed,
        "Size": f"{params.width}x{params.height}",
        "Model": params.model_name,
        "Clip skip": params.clip_skip if params.clip_skip > 1 else None,
        "RNG": None if params.rng == "GPU" else params.rng,  # A1111's default source goes unwritten
    }
    fields.update(extra or {})
    if params.emphasis != "Original" and _has_brackets(params):
        fields.setdefault("Emphasis", params.emphasis)  # A1111 adds it after the extra networks' keys
    order = [key for key in FIXED_KEYS if key in fields] + [key for key in fields if key not in FIXED_KEYS]
    return {key: fields[key] for key in order if fields[key] is not None}


def format_infotext(params: GenerationParams, extra: dict[str, Any] | None = None) -> str:
    """A1111's infotext: prompt, `Negative prompt: …` (if any), then one line of `key: value` pairs."""
    pairs = [
        key if key == value else f"{key}: {quote(value)}"
        for key, value in infotext_fields(params, extra).items()
    ]
    negative = f"\n{NEGATIVE_PREFIX} {params.negative_prompt}" if params.negative_prompt else ""
    return f"{params.prompt}{negative}\n{', '.join(pairs)}".strip()


def _decode(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_infotext(text: str) -> dict[str, str]:
    """Split an infotext into "Prompt", "Negative prompt" and its parameters (string values), as A1111 does."""
    lines = text.strip().split("\n")
    # The last line holds the parameters only if it looks like them; otherwise it is still prompt text.
    param_line = lines[-1] if len(_PARAM_RE.findall(lines[-1])) >= 3 else ""
    if param_line:
        lines = lines[:-1]
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX) and not negative:
            negative.append(line[len(NEGATIVE_PREFIX) :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in _PARAM_RE.findall(param_line):
        value = _decode(raw.strip())
        result[key] = value
        size = _SIZE_RE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.groups()
    if "Emphasis" not in result and (
        uses_emphasis(result["Prompt"]) or uses_emphasis(result["Negative prompt"])
    ):
        result["Emphasis"] = "Original"  # A1111 reads weights in an infotext without the key as Original's
    return {**_PARSE_DEFAULTS, **result}


def uses_emphasis(text: str) -> bool:
    """Whether A1111 reads any weight other than 1 in `text` (BREAK aside)."""
    return any(weight != 1.0 and chunk != "BREAK" for chunk, weight in parse_prompt_attention(text))


def params_from_infotext(info: dict[str, str]) -> GenerationParams:
    """Rebuild GenerationParams from `parse_infotext`'s dict (the inverse of `format_infotext`).

    As A1111 pastes an infotext: old combined sampler names are split ("DPM++ 2M Karras"), and a schedule
    equal to the sampler's default becomes "Automatic" (the same sigmas).
    """
    sampler, scheduler = get_sampler_and_scheduler(
        info.get("Sampler"), info.get("Schedule type"), convert_automatic=True
    )
    return GenerationParams(
        prompt=info["Prompt"],
        negative_prompt=info.get("Negative prompt", ""),
        seed=int(info["Seed"]),
        steps=int(info["Steps"]),
        cfg_scale=float(info["CFG scale"]),
        width=int(info["Size-1"]),
        height=int(info["Size-2"]),
        clip_skip=int(info.get("Clip skip", "1")),
        sampler=sampler,
        model_name=info.get("Model"),
        rng=info.get("RNG", "GPU"),
        scheduler=scheduler,
        emphasis=info.get("Emphasis", "Original"),
    )


def img2img_fields(denoising_strength: float) -> dict[str, Any]:
    """img2img's extra infotext keys (pass them as `extra`): A1111 records the denoising strength."""
    return {"Denoising strength": denoising_strength}


def hires_fields(params: GenerationParams, hires: HiresParams) -> dict[str, Any]:
    """The hires fix's extra infotext keys in A1111's order (pass them as `extra`, before "Lora hashes").

    "Hires sampler", "Hires prompt" and "Hires negative prompt" appear only when they differ from the first
    pass's; "Hires upscale" (by) or "Hires resize" (to, "WxH"); "Hires steps" only when not 0.
    """
    sampler = hires.sampler_for(params)
    by_scale = hires.resize_x == 0 and hires.resize_y == 0
    fields: dict[str, Any] = {
        "Denoising strength": hires.denoising_strength,
        "Hires sampler": sampler if hires.sampler and sampler != params.sampler else None,
        "Hires prompt": hires.prompt if hires.prompt and hires.prompt != params.prompt else None,
        "Hires negative prompt": (
            hires.negative_prompt
            if hires.negative_prompt and hires.negative_prompt != params.negative_prompt
            else None
        ),
        "Hires upscale": hires.scale if by_scale else None,
        "Hires resize": None if by_scale else f"{hires.resize_x}x{hires.resize_y}",
        "Hires steps": hires.steps or None,
        "Hires upscaler": hires.upscaler,
    }
    return {key: value for key, value in fields.items() if value is not None}


def hires_from_infotext(info: dict[str, str]) -> HiresParams | None:
    """The hires settings in `parse_infotext`'s dict, or None if the image was made without the hires fix."""
    if not any(key in info for key in ("Hires upscale", "Hires resize", "Hires upscaler")):
        return None
    return HiresParams(
        upscaler=info.get("Hires upscaler", "Latent"),
        scale=float(info.get("Hires upscale", "2")),
        resize_x=int(info.get("Hires resize-1", "0")),
        resize_y=int(info.get("Hires resize-2", "0")),
        steps=int(info.get("Hires steps", "0")),
        denoising_strength=float(info.get("Denoising strength", "0.7")),
        prompt=info.get("Hires prompt", ""),
        negative_prompt=info.get("Hires negative prompt", ""),
        sampler=info.get("Hires sampler", ""),
    )


def save_png(image: Image.Image, path: str | Path, infotext: str) -> Path:
    """Write `image` as PNG with `infotext` in its `parameters` chunk, atomically (temp file + rename)."""
    info = PngInfo()
    info.add_text("parameters", infotext)  # Pillow picks tEXt for Latin-1 text, iTXt otherwise
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return write_bytes_atomic(path, buffer.getvalue())


def read_infotext(path: str | Path) -> str | None:
    """The `parameters` text of a PNG written by A1111 or by us, or None if it has none."""
    with Image.open(path) as image:
        return image.info.get("parameters")
