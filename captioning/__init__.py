"""LoraSmith captioners (BLIP, GIT, WD14) behind one small interface; see captioning/base.py.

`make_captioner("wd14", model="SmilingWolf/wd-v1-4-convnext-tagger-v2", general_threshold=0.35)` builds one;
`caption_all(captioner, paths)` captions a folder's pictures in batches. Model libraries are imported only
when a captioner of that kind is made.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from captioning.base import Captioner, CaptionerError, caption_all

__all__ = ["CAPTIONERS", "Captioner", "CaptionerError", "caption_all", "make_captioner"]

# name → (module, class)
CAPTIONERS = {
    "blip": ("captioning.blip", "BlipCaptioner"),
    "git": ("captioning.git", "GitCaptioner"),
    "wd14": ("captioning.wd14", "WD14Tagger"),
}


def make_captioner(name: str, model: str | Path | None = None, **options) -> Captioner:
    """The captioner called `name`, loaded from `model` (hub id or folder; None: its default model).

    options: the captioner's own settings (thresholds, beams, prefix, batch_size, ...); an unknown one is a
    CaptionerError listing the valid ones.
    """
    if name not in CAPTIONERS:
        raise CaptionerError(f"unknown captioner {name!r}: choose one of {', '.join(CAPTIONERS)}")
    module, class_name = CAPTIONERS[name]
    cls = getattr(importlib.import_module(module), class_name)
    parameters = list(inspect.signature(cls.__init__).parameters)[1:]  # without self
    unknown = sorted(set(options) - set(parameters[1:]))
    if unknown:
        raise CaptionerError(
            f"captioner {name!r} has no option {', '.join(unknown)}: its options are {', '.join(parameters[1:])}"
        )
    return cls(**options) if model is None else cls(model, **options)
