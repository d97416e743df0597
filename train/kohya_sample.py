"""kohya's --sample_* settings as our `sample` group (train/kohya_config.py calls `sample_settings`)."""

from __future__ import annotations

from typing import Any

KEYS = {  # kohya key -> ours, value unchanged
    "sample_prompts": "sample.prompt_file",
    "sample_every_n_steps": "sample.every_n_steps",
    "sample_every_n_epochs": "sample.every_n_epochs",
    "sample_at_first": "sample.at_start",
    "sample_sampler": "sample.sampler",
}
KOHYA_SIZE = 512  # kohya renders a line without --w / --h at 512x512, whatever the training resolution


def sample_settings(settings: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Our overrides for kohya's sample keys in `settings`, and what does not carry over, with why.

    kohya lets sample_every_n_epochs silence sample_every_n_steps, and renders nothing without a cadence;
    here both cadences would apply and prompts without one are refused, so the conversion says so.
    """
    given = {key: value for key, value in settings.items() if key in KEYS and value not in (None, "", False)}
    lacking = []
    if "sample_every_n_epochs" in given and "sample_every_n_steps" in given:
        value = given.pop("sample_every_n_steps")
        lacking.append(f"sample_every_n_steps={value}: kohya ignores it when sample_every_n_epochs is set")
    cadence = any(
        key in given for key in ("sample_every_n_steps", "sample_every_n_epochs", "sample_at_first")
    )
    if "sample_prompts" in given and not cadence:
        return [], [f"sample_prompts={given['sample_prompts']}: kohya renders it only with "
                    "sample_every_n_steps, sample_every_n_epochs or sample_at_first"]  # fmt: skip
    if "sample_prompts" not in given:
        return [], [f"{key}={value}: no sample_prompts to render" for key, value in given.items()]
    overrides = [(KEYS[key], value) for key, value in given.items()]
    overrides += [("sample.width", KOHYA_SIZE), ("sample.height", KOHYA_SIZE)]
    return overrides, lacking
