"""A CLIP tokenizer from a folder or a hub id, for models that ship none (single-file checkpoints)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import CLIPTokenizer

from inference.models.bundle import ModelBundle
from inference.models.errors import ModelLoadError
from inference.models.open_clip_keys import open_clip_tokenizer

MIN_VOCAB = 256  # a byte-level BPE vocabulary holds at least one token per byte


def load_tokenizer(source: str) -> CLIPTokenizer:
    """The CLIP tokenizer in folder `source` (or its `tokenizer/` subfolder), else hub id `source`.

    A hub id loads from the local hub cache when offline.
    """
    local = Path(source).expanduser()
    if (local / "tokenizer").is_dir():
        local = local / "tokenizer"
    looks_like_path = local.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
    if looks_like_path and not local.is_dir():
        raise ModelLoadError(_hint(source, "the folder does not exist"))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(local) if local.is_dir() else source)
    except (OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(_hint(source, first_line)) from error
    # transformers builds an empty tokenizer, without an error, when it finds no vocabulary files.
    if len(tokenizer) < MIN_VOCAB:
        raise ModelLoadError(_hint(source, f"no vocabulary found, only {len(tokenizer)} tokens"))
    return tokenizer


def _hint(source: str, why: str) -> str:
    return (
        f"cannot load the tokenizer {source!r} ({why}). A single-file checkpoint ships no tokenizer: give "
        "model.tokenizer=<folder with vocab.json and merges.txt> (e.g. the tokenizer/ folder of any SD 1.5 "
        "diffusers model) or a hub id that is in the local hub cache."
    )


def with_tokenizer(bundle: ModelBundle, source: str) -> ModelBundle:
    """`bundle` with its tokenizer replaced by the one at `source`; it must fit the text encoder.

    An SDXL model gets it twice: the second padding with `!` as OpenCLIP (and SDXL's tokenizer_2) does."""
    tokenizer = load_tokenizer(source)
    vocab = bundle.text_encoder.config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelLoadError(
            f"the tokenizer {source!r} has {len(tokenizer)} tokens but the text encoder of {bundle.source} "
            f"knows only {vocab}; give the tokenizer the model was trained with."
        )
    if not bundle.is_sdxl:
        return dataclasses.replace(bundle, tokenizer=tokenizer)
    second = open_clip_tokenizer(load_tokenizer(source))
    return dataclasses.replace(bundle, tokenizer=tokenizer, tokenizer_2=second)
