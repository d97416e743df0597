"""The network being trained, at a chosen strength, as a sample picture renders it (and A1111 would).

Every network renders live, from the weights the optimizer just wrote, with no file in between:
- adapted layers (LoRA, LoCon, DoRA through peft; LoHa, LoKr as DeltaLayers): strength w makes each layer
  output `base(x) + w * (layer(x) - base(x))`, i.e. the weight `W + w * (W' - W)` that A1111 patches in for
  `<lora:name:w>` (DoRA's decomposed W' included); the infotext's prompt carries that tag;
- a textual-inversion embedding: its live vectors through the engine's embeddings, the trigger written and
  read as A1111 reads `(trigger:w)`;
- a full fine-tune: the model itself; it has no strength to turn, so the config checks allow only 1.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from torch import nn

from inference.embedding_grid import with_strength
from inference.embeddings import Embedding, EmbeddingDatabase
from inference.lora_grid import lora_tag
from train.network.base import TrainedNetwork, tunes_base_model
from train.network.embedding import EmbeddingNetwork


@dataclass
class LiveNetwork:
    """How one strength of the trained network renders."""

    applied: Callable[[], AbstractContextManager]  # patches the model while the pictures render
    prompt_for: Callable[[str], str]  # the prompt the text encoder reads (an embedding's strength)
    tag: str  # appended to the infotext's prompt, e.g. `<lora:name:0.5>`
    embeddings: EmbeddingDatabase | None = None


def _base_of(layer: nn.Module) -> nn.Module:
    """The frozen original inside an adapted layer (a DeltaLayer's `base`, a peft layer's base layer)."""
    base = getattr(layer, "base", None)
    return base if isinstance(base, nn.Module) else layer.get_base_layer()


@contextlib.contextmanager
def blended(layers: list[nn.Module], weight: float) -> Iterator[None]:
    """While active, each adapted layer outputs base(x) + weight * (layer(x) - base(x))."""
    handles = []
    for layer in layers:
        base, seen = _base_of(layer), []

        def keep(_module, args, seen=seen):
            seen.append(args[0])  # the input before the layer's own hooks change it (DoRA scales it)

        def blend(_module, _args, output, base=base, seen=seen):
            plain = base(seen.pop())
            return plain + weight * (output - plain)

        handles.append(layer.register_forward_pre_hook(keep, prepend=True))
        handles.append(layer.register_forward_hook(blend))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def live_embedding(network: EmbeddingNetwork, tokenizer) -> EmbeddingDatabase:
    """The trained vectors as the engine's embedding for the trigger (`network.token`)."""
    vectors = network.vectors.detach().float().cpu()
    database = EmbeddingDatabase(tokenizer, vectors.shape[1])
    database.add(Embedding(network.token, vectors))
    return database


def live_network(network: TrainedNetwork, tokenizer, name: str, weight: float) -> LiveNetwork:
    """`network` at strength `weight`; `name` is the file name A1111 would load it by."""
    if isinstance(network, EmbeddingNetwork):
        return LiveNetwork(
            contextlib.nullcontext,
            functools.partial(with_strength, trigger=network.token, strength=weight),
            "",
            live_embedding(network, tokenizer),
        )
    if tunes_base_model(network):
        if weight != 1:  # the config checks refuse it; a caller that skipped them learns here
            raise ValueError(f"a full fine-tune renders at weight 1 only, not {weight:g}")
        return LiveNetwork(contextlib.nullcontext, str, "")
    layers = [adapted.layer for adapted in network.layers]
    applied = contextlib.nullcontext if weight == 1 else functools.partial(blended, layers, weight)
    return LiveNetwork(applied, str, lora_tag(name, weight))
