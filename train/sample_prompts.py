"""The `sample` config group read into prompts: inline lines or a kohya prompt file, the defaults filled in.

`check_sample` runs once with the other config checks, so a bad prompt file stops the run before the model
loads, with one line naming the file, line and option.
"""

from __future__ import annotations

from inference.prompt_file import (
    PromptFileError,
    SamplePrompt,
    parse_lines,
    read_prompt_file,
    sampler_name,
    with_defaults,
)
from train.config import SampleConfig, TrainConfig
from train.errors import ConfigError

# px a side: dataset.resolution's own bound. A sample is one uninterruptible render; a typo such as 8000
# would hold the run for hours, deaf to Ctrl-C, inside a single VAE convolution.
MAX_SAMPLE_SIDE = 4096


def sampling_enabled(s: SampleConfig) -> bool:
    """Whether the run renders samples at all."""
    return bool(s.every_n_steps or s.every_n_epochs or s.at_start)


def defaults(cfg: TrainConfig) -> SamplePrompt:
    """What a prompt that sets nothing renders with: `sample.*`, sizes from dataset.resolution."""
    s, size = cfg.sample, cfg.dataset.resolution
    return SamplePrompt(
        "", s.negative_prompt, s.width or size, s.height or size, s.seed, s.cfg_scale, s.steps,
        sampler_name(s.sampler), s.weight,
    )  # fmt: skip


def resolved_prompts(cfg: TrainConfig) -> list[SamplePrompt]:
    """Every sample prompt in order, each unset option taken from the config's defaults."""
    s = cfg.sample
    prompts = read_prompt_file(s.prompt_file) if s.prompt_file else parse_lines(s.prompts, "sample.prompts")
    base = defaults(cfg)
    return [with_defaults(prompt, base) for prompt in prompts]


def _check_cadence(s: SampleConfig) -> None:
    for key in ("every_n_steps", "every_n_epochs"):
        value = getattr(s, key)
        if value is not None and value < 1:
            raise ConfigError(f"sample.{key}={value} must be at least 1 (or null: never)")
    has_prompts = bool(s.prompts or s.prompt_file)
    if s.prompts and s.prompt_file:
        raise ConfigError("give sample.prompts or sample.prompt_file, not both")
    if sampling_enabled(s) and not has_prompts:
        raise ConfigError(
            "sample.every_n_steps / every_n_epochs / at_start render prompts: set sample.prompt_file (kohya's "
            "--sample_prompts) or sample.prompts"
        )
    if has_prompts and not sampling_enabled(s):
        raise ConfigError(
            "sample prompts are set but never rendered: set sample.every_n_steps, sample.every_n_epochs or "
            "sample.at_start=true (or sample=none)"
        )


def _check_defaults(s: SampleConfig) -> None:
    try:
        sampler_name(s.sampler)
    except ValueError as error:
        raise ConfigError(f"sample.sampler: {error}") from None
    if s.steps < 1:
        raise ConfigError(f"sample.steps={s.steps} must be at least 1")
    if s.seed < -1:
        raise ConfigError(f"sample.seed={s.seed} must be -1 (random) or a seed >= 0")
    for key in ("width", "height"):
        value = getattr(s, key)
        if value is not None and (value < 8 or value % 8):
            raise ConfigError(
                f"sample.{key}={value} must be a positive multiple of 8 (or null: the resolution)"
            )


def check_sample(cfg: TrainConfig) -> None:
    """The sample settings, and every prompt parsed; ConfigError / PromptFileError as one line."""
    s = cfg.sample
    _check_cadence(s)
    if not sampling_enabled(s):
        return
    _check_defaults(s)
    prompts = resolved_prompts(cfg)
    for number, prompt in enumerate(prompts, start=1):
        if max(prompt.width, prompt.height) > MAX_SAMPLE_SIDE:
            raise PromptFileError(
                f"sample prompt {number} of {s.prompt_file or 'sample.prompts'} ({prompt.prompt[:40]!r}) asks for "
                f"{prompt.width}x{prompt.height} px: at most {MAX_SAMPLE_SIDE} px a side (--w / --h, or "
                "sample.width / sample.height)"
            )
    if cfg.network.module == "full":
        for number, prompt in enumerate(prompts, start=1):
            if prompt.weight != 1:
                raise PromptFileError(
                    f"sample prompt {number} of {s.prompt_file or 'sample.prompts'} ({prompt.prompt[:40]!r}) asks "
                    f"for weight {prompt.weight:g}: "
                    "network.module=full trains the model itself, which has no strength to turn; use 1"
                )
