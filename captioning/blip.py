"""BLIP sentences ("a man working on a piece of metal"), as kohya's make_captions writes them.

Same model (Salesforce's large captioning BLIP), same input (384² bicubic, CLIP mean/std: the
processor's settings) and same decoding: the text decoder starts from the prompt "a picture of ", which is
cut from the result. Differences: beam search (`num_beams`, greedy at 1) is the default, so a caption
depends only on the picture; kohya's command defaults to nucleus sampling, here `sample=True` (top_p 0.9,
repetition penalty 1.1, seeded per batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from captioning.base import Captioner, as_rgb
from captioning.sources import load_pretrained

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
PROMPT = "a picture of "
_NEEDS = (
    "config.json, the weights (model.safetensors) and the processor files (tokenizer, processor_config.json)"
)
_SAMPLING_REPETITION_PENALTY = 1.1  # what BLIP's own sampling uses; beam search uses 1.0


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's generators at `seed`, leaving the caller's random state untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def strip_prompt(text: str, prompt: str) -> str:
    """The caption without the decoding prompt it starts with (BLIP's tokenizer lowercases both)."""
    head = prompt.strip().lower()
    text = text.strip()
    return text[len(head) :].strip() if head and text.lower().startswith(head) else text


class BlipCaptioner(Captioner):
    """BLIP image captioning from a hub id or a folder saved with `save_pretrained`."""

    name = "blip"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        num_beams: int = 1,
        min_length: int = 5,
        max_length: int = 75,
        prefix: str = "",
        device: str = "cpu",
        sample: bool = False,
        top_p: float = 0.9,
        seed: int = 42,
        prompt: str = PROMPT,
        batch_size: int = 8,
    ) -> None:
        """Lengths count tokens, the prompt's included (as in BLIP); `prefix` is put before every caption."""
        self.device = torch.device(device)
        self.processor = load_pretrained(BlipProcessor.from_pretrained, model, "BLIP model", _NEEDS)
        loaded = load_pretrained(BlipForConditionalGeneration.from_pretrained, model, "BLIP model", _NEEDS)
        self.model = loaded.to(self.device).eval()
        self.num_beams, self.min_length, self.max_length = num_beams, min_length, max_length
        self.prefix, self.sample, self.top_p, self.seed = prefix, sample, top_p, seed
        self.prompt, self.batch_size = prompt, batch_size

    def _generate_options(self) -> dict:
        options = {"max_length": self.max_length, "min_length": self.min_length}
        if self.sample:
            return options | {
                "do_sample": True,
                "top_p": self.top_p,
                "repetition_penalty": _SAMPLING_REPETITION_PENALTY,
            }
        return options | {"do_sample": False, "num_beams": self.num_beams}

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One sentence per picture, `prefix` first."""
        if not images:
            return []
        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=as_rgb(images), text=text, return_tensors="pt").to(self.device)
        with torch.no_grad(), seeded(self.seed, self.device):
            ids = self.model.generate(**inputs, **self._generate_options())
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [self.prefix + strip_prompt(t, self.prompt) for t in texts]
