"""A1111 infotext: the generation parameters as text, stored in a PNG's `parameters` chunk ("PNG Info")."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
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
        "Variation seed": params.subseed if params.subseed_strength else None,
        "Variation seed strength": params.subseed_strength or None,
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


def _split_infotext(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """An infotext's prompt, negative prompt and (key, value) pairs, values unquoted, as A1111 splits it."""
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
    pairs = [(key, _decode(raw.strip())) for key, raw in _PARAM_RE.findall(param_line)]
    return "\n".join(prompt), "\n".join(negative), pairs


def parse_infotext(text: str) -> dict[str, str]:
    """Split an infotext into "Prompt", "Negative prompt" and its parameters (string values), as A1111 does."""
    prompt, negative, pairs = _split_infotext(text)
    result = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in pairs:
        result[key] = value
        size = _SIZE_RE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.groups()
    if "Emphasis" not in result and (uses_emphasis(prompt) or uses_emphasis(negative)):
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
        subseed=int(info.get("Variation seed", "0")),
        subseed_strength=float(info.get("Variation seed strength", "0")),
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


# What A1111's parse_generation_parameters fills in for keys an infotext leaves out (v1.10.1).
_A1111_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
    "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
    "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0,
    "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}  # fmt: skip
# The ones `parse_infotext` fills in too: what GenerationParams needs from a text that leaves them out.
_PARSE_DEFAULTS = {key: _A1111_DEFAULTS[key] for key in ("Clip skip", "Schedule type", "RNG")}


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """A1111's `parse_generation_parameters`: an infotext (A1111's or ours) as the dict its paste button uses.

    "Prompt" and "Negative prompt"; every parameter as its string, `WxH` values split into `key-1` / `key-2`
    (the key itself left out); A1111's defaults for missing keys; a `Hypernet` appended to the prompt as a
    tag; an old "First pass size" turned into Size and Hires resize; and the compatibility switches A1111
    derives from an old `Version`. Prompt styles are not looked up (there is no styles file here).
    """
    prompt, negative, pairs = _split_infotext(text)
    result: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in pairs:
        size = _SIZE_RE.match(value)
        if size:  # "Size: 512x768" is read as Size-1 and Size-2 only
            result[f"{key}-1"], result[f"{key}-2"] = size.groups()
        else:
            result[key] = value
    result = {**result, **{key: value for key, value in _A1111_DEFAULTS.items() if key not in result}}
    if "Hypernet" in result:
        result["Prompt"] += f"<hypernet:{result['Hypernet']}:{result.get('Hypernet strength', '1.0')}>"
    if result["FP8 weight"] != "Disable":
        result.setdefault("Cache FP16 weight for LoRA", False)
    _restore_first_pass_size(result)
    _backcompat(result)
    return result


def _restore_first_pass_size(result: dict[str, Any]) -> None:
    """Infotexts from before A1111 1.0 give the first pass's size and the final Size; now Size is the first."""
    first = result.get("First pass size-1"), result.get("First pass size-2")
    if None in first:
        return
    width, height = int(result.get("Size-1", 512)), int(result.get("Size-2", 512))
    first_w, first_h = int(first[0]), int(first[1])
    if first_w == 0 or first_h == 0:  # A1111 then scaled the picture to about 512 x 512, in steps of 64
        scale = math.sqrt(512 * 512 / (width * height))
        first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    result.update({"Size-1": first_w, "Size-2": first_h, "Hires resize-1": width, "Hires resize-2": height})


def _backcompat(result: dict[str, Any]) -> None:
    """A1111's switches for infotexts written by versions before 1.6 / 1.7 / 1.8 (by the `Version` key)."""
    text = result.get("Version")
    if text is None:
        return
    text = re.sub(r"^([^-]+-[^-]+)-.*", r"\1", str(text))  # "v1.7.0-225-g1a2b3c" → "v1.7.0-225"
    try:
        written = Version(text)
    except InvalidVersion:
        return
    if written < Version("1.6.0") and "[" in result["Prompt"]:
        result["Old prompt editing timelines"] = True
    if written < Version("1.6.0") and result.get("Sampler") in ("DDIM", "PLMS"):
        result["Pad conds v0"] = True
    if written < Version("v1.7.0-225"):
        result["Downcast alphas_cumprod"] = True
    if written < Version("1.8.0") and result.get("Refiner"):
        result["Refiner switch by sampling steps"] = True
