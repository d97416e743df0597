"""Image scores for real models, measured on the evaluation grid: CLIP text-image agreement and identity.

- `clip_score` (eval.clip_model, a transformers CLIPModel folder or hub id): how well each picture matches
  its prompt, torchmetrics' CLIPScore convention: 100 x max(cosine(image, text), 0), averaged over the
  pictures of one LoRA weight.
- `identity` (eval.identity_model: CLIP, CLIP vision or DINOv2, loaded with AutoModel): the mean cosine
  similarity between the generated pictures and the training pictures (1.0 = the same embedding), averaged
  over every (generated, training) pair.

Weights load from safetensors only (no pickles); a model that cannot be loaded is a one-line ConfigError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from train.errors import ConfigError

BATCH = 16  # pictures per forward pass


def _load(loader, source: str, key: str):
    try:
        return loader(source)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{key}={source!r} cannot be loaded ({first}): give a local model folder (config.json, "
            "model.safetensors and its preprocessor files) or a hub id that is available offline"
        ) from error


def _vector(output) -> torch.Tensor:
    """The pooled embedding (N, D) of a model output: projected where the model projects."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return output.last_hidden_state[:, 0]  # the class token


class ClipScorer:
    """CLIP text-image score of pictures against their prompts."""

    def __init__(self, source: str, device: torch.device | str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.device = torch.device(device)
        self.model = _load(
            lambda s: CLIPModel.from_pretrained(s, use_safetensors=True), source, "eval.clip_model"
        )
        self.model.eval().to(self.device)
        self.processor = _load(CLIPProcessor.from_pretrained, source, "eval.clip_model")

    @torch.no_grad()
    def cosines(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """cosine(image i, prompt i) for each pair: (N,)."""
        values = []
        for start in range(0, len(images), BATCH):
            inputs = self.processor(
                text=prompts[start : start + BATCH], images=images[start : start + BATCH],
                return_tensors="pt", padding=True, truncation=True,
            ).to(self.device)  # fmt: skip
            image = _vector(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
            text = _vector(
                self.model.get_text_features(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                )
            )
            values.append(F.cosine_similarity(image.float(), text.float(), dim=-1).cpu())
        return torch.cat(values)

    def score(self, images: list[Image.Image], prompts: list[str]) -> float:
        """100 x max(cosine, 0), averaged over the pictures."""
        return float((100 * self.cosines(images, prompts).clamp(min=0)).mean())


class IdentityScorer:
    """Similarity of generated pictures to reference pictures in a vision model's embedding space."""

    def __init__(self, source: str, device: torch.device | str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.device = torch.device(device)
        self.model = _load(
            lambda s: AutoModel.from_pretrained(s, use_safetensors=True), source, "eval.identity_model"
        )
        self.model.eval().to(self.device)
        self.processor = _load(AutoImageProcessor.from_pretrained, source, "eval.identity_model")

    @torch.no_grad()
    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-length embeddings (N, D) of `images`."""
        vectors = []
        for start in range(0, len(images), BATCH):
            pixels = self.processor(images=images[start : start + BATCH], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device)
            if hasattr(self.model, "get_image_features"):  # a whole CLIP model: its projected image tower
                output = self.model.get_image_features(pixel_values=pixels)
            else:
                output = self.model(pixel_values=pixels)
            vectors.append(F.normalize(_vector(output).float(), dim=-1).cpu())
        return torch.cat(vectors)

    def similarity(self, generated: list[Image.Image], references: list[Image.Image] | torch.Tensor) -> float:
        """Mean cosine similarity over every (generated, reference) pair; `references` may be embed()'s."""
        if not isinstance(references, torch.Tensor):
            references = self.embed(references)
        return float((self.embed(generated) @ references.T).mean())


def load_scorers(clip_model: str | None, identity_model: str | None, device) -> dict:
    """The configured scorers by name: {"clip_score": ClipScorer, "identity": IdentityScorer}."""
    scorers: dict = {}
    if clip_model:
        scorers["clip_score"] = ClipScorer(clip_model, device)
    if identity_model:
        scorers["identity"] = IdentityScorer(identity_model, device)
    return scorers


def image_scores(
    scorers: dict, images: list[Image.Image], prompts: list[str], references: torch.Tensor | None
) -> dict[str, float]:
    """The scores of one grid column: its pictures, the prompt of each, the training pictures' embeddings."""
    scores = {}
    if "clip_score" in scorers:
        scores["clip_score"] = scorers["clip_score"].score(images, prompts)
    if "identity" in scorers and references is not None:
        scores["identity"] = scorers["identity"].similarity(images, references)
    return scores
