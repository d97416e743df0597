"""WD14 tags ("1boy, apron, fire, facial hair"): SmilingWolf's ONNX taggers run with onnxruntime.

A model is a folder (or hub repo) holding `model.onnx` and `selected_tags.csv`. The input is prepared as
SmilingWolf's own demo does it: transparency on white, centred on a white square, resized (bicubic) to
the model's input size, BGR, float32 in 0-255, NHWC. Which tags are kept: see `captioning.wd14_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from captioning.base import Captioner, CaptionerError
from captioning.sources import model_file
from captioning.wd14_labels import load_labels, select_tags, tag_text
from data.images import WHITE, to_rgb

DEFAULT_MODEL = "SmilingWolf/wd-v1-4-convnext-tagger-v2"
MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"


def preprocess(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """One picture as the tagger's input: (H, W, 3) float32, BGR, 0-255, for size = (H, W)."""
    rgb = to_rgb(image)  # alpha composited on white
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    height, width = size
    if square.size != (width, height):
        square = square.resize((width, height), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(square, dtype=np.float32)[:, :, ::-1])


def _open_session(path: Path, providers: Sequence[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=list(providers))
    except Exception as error:  # onnxruntime's errors share no base class but Exception
        raise CaptionerError(
            f"cannot open {path}: {str(error).strip()}. Fix: download model.onnx again (the file may be cut "
            f"short)"
        ) from None


def _input_geometry(session: ort.InferenceSession, path: Path) -> tuple[tuple[int, int], int | None]:
    """((H, W), fixed batch size or None) of an NHWC input; CaptionerError for any other layout."""
    shape = session.get_inputs()[0].shape
    nhwc = len(shape) == 4 and shape[3] == 3 and all(isinstance(d, int) and d > 0 for d in shape[1:3])
    if not nhwc:
        raise CaptionerError(
            f"{path} takes input of shape {shape}, not (batch, height, width, 3) (NHWC) as WD14 taggers do: "
            f"use SmilingWolf's model.onnx, or export channels-last"
        )
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return (shape[1], shape[2]), batch


class WD14Tagger(Captioner):
    """Danbooru-style tags from a WD14 ONNX tagger (a folder or a hub repo id, downloaded to the cache)."""

    name = "wd14"

    def __init__(
        self,
        model_dir: str | Path = DEFAULT_MODEL,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        include_ratings: bool = False,
        underscores_to_spaces: bool = True,
        exclude_tags: Sequence[str] = (),
        character_tags_first: bool = False,
        batch_size: int = 8,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        """Thresholds are inclusive (score >= threshold); one above 1 turns that category off."""
        self.labels = load_labels(model_file(model_dir, TAGS_FILE, "WD14 tagger"))
        onnx_path = model_file(model_dir, MODEL_FILE, "WD14 tagger")
        self.session = _open_session(onnx_path, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.size, self.fixed_batch = _input_geometry(self.session, onnx_path)
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.labels.names):
            raise CaptionerError(
                f"{onnx_path} scores {outputs} tags but its {TAGS_FILE} lists {len(self.labels.names)}: "
                f"the two files come from different models; take both from the same one"
            )
        self.general_threshold, self.character_threshold = general_threshold, character_threshold
        self.include_ratings, self.character_tags_first = include_ratings, character_tags_first
        self.underscores_to_spaces, self.exclude_tags = underscores_to_spaces, list(exclude_tags)
        self.batch_size = batch_size

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Tag scores (N, T) for preprocessed pictures (N, H, W, 3); fixed-batch models run in padded chunks."""
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: batch})[0]
        chunks = []
        for start in range(0, len(batch), self.fixed_batch):
            chunk = batch[start : start + self.fixed_batch]
            padded = np.zeros((self.fixed_batch, *chunk.shape[1:]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            chunks.append(self.session.run(None, {self.input_name: padded})[0][: len(chunk)])
        return np.concatenate(chunks)

    def tags(self, scores: np.ndarray) -> str:
        """The caption for one picture's scores (T,): selected tags, formatted, joined with `, `."""
        names = select_tags(
            scores,
            self.labels,
            self.general_threshold,
            self.character_threshold,
            self.include_ratings,
            self.character_tags_first,
        )
        return tag_text(names, self.underscores_to_spaces, self.exclude_tags)

    def caption(self, images: list[Image.Image]) -> list[str]:
        """One comma-separated tag string per picture."""
        if not images:
            return []
        batch = np.stack([preprocess(image, self.size) for image in images])
        return [self.tags(row) for row in self.scores(batch)]
