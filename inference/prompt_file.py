"""kohya sd-scripts' sample prompt files (`--sample_prompts`): one prompt a line with inline options.

A line is `prompt --n negative --w 512 --h 768 --d 42 --l 7.5 --s 28 --ss euler_a --am 0.8`, split on
" --" as kohya splits it; lines starting with `#` and blank lines are skipped. Options (case-insensitive):

| option | meaning | kohya's dict key |
|---|---|---|
| `--n text` | negative prompt | negative_prompt |
| `--w N` / `--h N` | width / height in pixels, floored to a multiple of 8 (kohya) | width / height |
| `--d N` | seed | seed |
| `--l X` | CFG scale | scale |
| `--s N` | sampling steps, clamped to 1…1000 (kohya) | sample_steps |
| `--ss name` / `--sampler name` | sampler: kohya's names (euler_a, k_dpm_2, ddim) or A1111's | sample_sampler |
| `--am X` | network weight (kohya gen_img.py's multiplier; A1111's `<lora:name:X>`) | network_multiplier |

`.toml` files hold a `[prompt]` table of shared keys and `[[prompt.subset]]` entries; `.json` files a list
of lines or of such dicts; anything else is read as lines. Options our engine cannot honour (kohya's FLUX
guidance `--g`, ControlNet `--cn`, …) and unknown ones are refused with the file, line and option named.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from data.errors import LoraSmithError


class PromptFileError(LoraSmithError):
    """A sample prompt file (or config prompt) that cannot be read as kohya's format."""


@dataclass(frozen=True)
class SamplePrompt:
    """One sample picture's settings; None takes the run's default (`sample.*` in the config)."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    sampler: str | None = None  # A1111's name, resolved from whatever the file wrote
    weight: float | None = None  # the trained network's strength


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _size(text: str) -> int:
    value = _int(text)
    if value < 8:
        raise ValueError(f"{value} is below 8 pixels")
    return value - value % 8  # kohya floors sizes to the VAE's factor


def _steps(text: str) -> int:
    return max(1, min(1000, _int(text)))  # kohya clamps


def _seed(text: str) -> int:
    value = _int(text)
    if value < -1:
        raise ValueError("a seed is -1 (random) or at least 0")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def sampler_name(name: str) -> str:
    """A1111's name for a kohya or A1111 sampler name; ValueError naming the choices otherwise."""
    from inference.sampler_names import KOHYA_NAMES, KOHYA_UNMATCHED, SAMPLER_SPECS, find_sampler

    text = name.strip()
    if text.casefold() in KOHYA_UNMATCHED:
        raise ValueError(f"kohya's {text}: {KOHYA_UNMATCHED[text.casefold()]}")
    spec = find_sampler(text)
    if spec is None:
        choices = ", ".join([*KOHYA_NAMES, *(s.name for s in SAMPLER_SPECS)])
        raise ValueError(f"{text!r} is not a known sampler; use one of: {choices}")
    return spec.name


def _multiplier(text: str) -> float:
    values = text.split(",")
    if len(values) != 1:
        raise ValueError("one weight: this run trains one network")
    return _float(values[0])


# option → (SamplePrompt field, value parser)
OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "n": ("negative_prompt", str),
    "w": ("width", _size),
    "h": ("height", _size),
    "d": ("seed", _seed),
    "l": ("cfg_scale", _float),
    "s": ("steps", _steps),
    "ss": ("sampler", sampler_name),
    "sampler": ("sampler", sampler_name),
    "am": ("weight", _multiplier),
}
# kohya's options for other model families and pipelines, refused with the reason
FOREIGN = {
    "g": "FLUX's embedded guidance",
    "cn": "a ControlNet image",
    "ctr": "Lumina's CFG truncation",
    "rcfg": "Lumina's renormalised CFG",
    "fs": "flow-matching models' shift",
    "f": "video frame counts",
}
# kohya's keys in .toml / .json entries → our fields (and their parsers)
DICT_KEYS = {
    "prompt": "prompt", "negative_prompt": "n", "width": "w", "height": "h", "seed": "d", "scale": "l",
    "sample_steps": "s", "sample_sampler": "ss", "network_multiplier": "am",
}  # fmt: skip


def _option(option: str, raw: str, where: str) -> tuple[str, Any]:
    """(field, value) for one `--option value`; PromptFileError naming `where` and the option."""
    key = option.casefold()
    if key in FOREIGN:
        raise PromptFileError(f"{where}: --{option} ({FOREIGN[key]}) does not apply to this model")
    if key not in OPTIONS:
        known = " ".join(f"--{name}" for name in OPTIONS)
        raise PromptFileError(f"{where}: unknown option --{option}; the options are {known}")
    name, parse = OPTIONS[key]
    value = raw.strip()
    if not value:
        raise PromptFileError(f"{where}: --{option} needs a value")
    try:
        return name, parse(value)
    except ValueError as error:
        raise PromptFileError(f"{where}: --{option} {value}: {error}") from None


def parse_line(line: str, where: str) -> SamplePrompt:
    """One prompt line in kohya's syntax; `where` (e.g. `prompts.txt:3`) names it in errors."""
    prompt, *parts = (" " + line.strip()).split(" --")  # the space: a line may start with options
    values: dict[str, Any] = {}
    for part in parts:
        option, _, raw = part.strip().partition(" ")
        if not option:
            raise PromptFileError(f"{where}: an empty option `--` (a prompt cannot contain ' --')")
        name, value = _option(option, raw, where)
        values[name] = value
    if not prompt.strip():
        raise PromptFileError(f"{where}: the line has options but no prompt")
    return SamplePrompt(prompt.strip(), **values)


def parse_entry(entry: dict, where: str) -> SamplePrompt:
    """One `.toml` / `.json` prompt entry with kohya's keys."""
    values: dict[str, Any] = {}
    for key, raw in entry.items():
        if key not in DICT_KEYS:
            if key.casefold() in {"guidance_scale", "controlnet_image", "cfg_trunc_ratio", "renorm_cfg"}:
                raise PromptFileError(f"{where}: key {key!r} does not apply to this model")
            raise PromptFileError(f"{where}: unknown key {key!r}; the keys are {', '.join(DICT_KEYS)}")
        if key == "prompt":
            values["prompt"] = str(raw).strip()
            continue
        name, value = _option(DICT_KEYS[key], str(raw), where)
        values[name] = value
    if not values.get("prompt"):
        raise PromptFileError(f"{where}: the entry has no prompt")
    return SamplePrompt(**values)


def parse_lines(lines: list[str], source: str) -> list[SamplePrompt]:
    """Prompt lines (comments and blank lines skipped); errors name `source` and the 1-based line."""
    return [
        parse_line(line, f"{source}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _toml(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, from PyPI before Python 3.11
        import tomli as tomllib
    return tomllib.loads(text)


def _entries(items: list, path: Path) -> list[SamplePrompt]:
    prompts = []
    for number, item in enumerate(items, start=1):
        where = f"{path} entry {number}"
        if isinstance(item, str):
            prompts.append(parse_line(item, where))
        elif isinstance(item, dict):
            prompts.append(parse_entry(item, where))
        else:
            raise PromptFileError(f"{where}: expected a prompt line or a table of keys")
    return prompts


def read_prompt_file(path: str | Path) -> list[SamplePrompt]:
    """Every prompt of a kohya prompt file (.txt, .toml or .json), in file order."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptFileError(f"cannot read the prompt file {path}: {error}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            table = _toml(text).get("prompt")
            if not isinstance(table, dict) or not isinstance(table.get("subset"), list):
                raise PromptFileError(f"{path}: a .toml prompt file needs [prompt] and [[prompt.subset]]")
            shared = {k: v for k, v in table.items() if k != "subset"}
            prompts = _entries([{**shared, **subset} for subset in table["subset"]], path)
        elif suffix == ".json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise PromptFileError(f"{path}: a .json prompt file holds a list of prompts")
            prompts = _entries(items, path)
        else:
            prompts = parse_lines(text.splitlines(), str(path))
    except ValueError as error:  # TOML / JSON syntax (PromptFileError is not a ValueError)
        raise PromptFileError(f"{path}: {error}") from None
    if not prompts:
        raise PromptFileError(f"{path}: holds no prompt (only comments or blank lines)")
    return prompts


def with_defaults(prompt: SamplePrompt, defaults: SamplePrompt) -> SamplePrompt:
    """`prompt` with each unset value taken from `defaults`."""
    return replace(
        prompt,
        **{
            f.name: getattr(defaults, f.name) for f in fields(SamplePrompt) if getattr(prompt, f.name) is None
        },
    )
