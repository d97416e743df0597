"""An embedding strength sweep: prompts x seeds (rows) at each strength of a textual-inversion file (columns).

The file loads as A1111 loads it from `embeddings/`: its trigger is the file name. Strength 0 renders
without the embedding (the trigger read as plain words, as the base model reads it), strength 1 the prompt
as written, any other strength the trigger under A1111's emphasis, `(trigger:0.5)`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

from inference.components import BaseModel
from inference.embeddings import EmbeddingDatabase, load_embedding
from inference.infotext import format_number
from inference.lora_grid import GridColumn
from inference.ti_hashes import ti_hashes
from inference.txt2img import GenerationParams


def with_strength(prompt: str, trigger: str, strength: float) -> str:
    """`prompt` with each standalone `trigger` emphasised as `(trigger:strength)`; unchanged at strength 1."""
    if strength == 1:
        return prompt
    pattern = rf"(?<![\w]){re.escape(trigger)}(?![\w])"
    return re.sub(pattern, lambda m: f"({m.group(0)}:{format_number(strength)})", prompt, flags=re.IGNORECASE)


def embedding_columns(
    model: BaseModel, embedding_path: str | Path, weights: list[float], negative_prompt: str, steps: int
) -> list[GridColumn]:
    """One grid column per strength of the embedding file (render them with lora_grid.render_columns)."""
    embedding = load_embedding(embedding_path)
    database = EmbeddingDatabase(model.tokenizer, model.text_encoder.config.hidden_size)
    database.add(embedding)

    def column(weight: float) -> GridColumn:
        used = database if weight else None

        def fields(params: GenerationParams) -> dict:
            return {"TI hashes": ti_hashes(model.tokenizer, params.prompt, negative_prompt, used, steps)}

        return GridColumn(
            f"{embedding.name} {format_number(weight)}",
            model,
            contextlib.nullcontext,
            f"w{format_number(weight)}",
            prompt_for=functools.partial(with_strength, trigger=embedding.name, strength=weight),
            embeddings=used,
            fields_for=fields,
        )

    return [column(float(weight)) for weight in weights]
