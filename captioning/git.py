"""GIT sentences ("a drawing of a blacksmith with a hammer"), as kohya's make_captions_by_git writes them.

Microsoft's GIT trained on TextCaps: it also reads text in the picture. Greedy decoding from the image
alone, up to `max_length` tokens (kohya's default 50).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor

from captioning.base import Captioner, as_rgb
from captioning.sources import load_pretrained

DEFAULT_MODEL = "microsoft/git-large-textcaps"
_NEEDS = (
    "config.json, the weights (model.safetensors) and the processor files (tokenizer, processor_config.json)"
)


class GitCaptioner(Captioner):
    """GIT image captioning from a hub id or a folder saved with `save_pretrained`."""

    name = "git"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        max_length: int = 50,
        prefix: str = "",
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        """`max_length` counts tokens; `prefix` is put before every caption."""
        self.device = torch.device(device)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model, "GIT model", _NEEDS)
        loaded = load_pretrained(AutoModelForCausalLM.from_pretrained, model, "GIT model", _NEEDS)
        self.model = loaded.to(self.device).eval()
        self.max_length, self.prefix, self.batch_size = max_length, prefix, batch_size

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One sentence per picture, `prefix` first."""
        if not images:
            return []
        pixels = self.processor(images=as_rgb(images), return_tensors="pt").pixel_values.to(self.device)
        with torch.no_grad():
            ids = self.model.generate(pixel_values=pixels, max_length=self.max_length, do_sample=False)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [self.prefix + text.strip() for text in texts]
