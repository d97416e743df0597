"""Which base model to load: the `model:` config group, shared by training and the engine."""

from __future__ import annotations

from dataclasses import dataclass

# The models a name alone selects (built in code or bundled): `model.kind` / the engine's `model=`.
BUILT_IN_MODELS = ("toy", "toy_xl", "tiny", "tiny_sdxl", "sd15_arch", "sdxl_arch")


@dataclass
class ModelConfig:
    """The `model:` group: a built-in model by `kind`, or `path` (kind pretrained) with its overrides."""

    kind: str = "tiny"  # toy (models/toy) | toy_xl (models/toy_xl) | tiny | sd15_arch | tiny_sdxl | sdxl_arch | pretrained
    # diffusers folder, hub id, or single-file .safetensors/.ckpt in the original LDM layout (a sidecar
    # <file>.yaml gives its architecture, as in A1111); kohya --pretrained_model_name_or_path
    path: str | None = None
    revision: str | None = None
    variant: str | None = None  # e.g. fp16
    init_seed: int = 0  # weights of the models built in code (tiny, sd15_arch)
    clip_skip: int = 1  # kohya --clip_skip; 2 for NovelAI anime models; SD 2.x: 1 = its penultimate
    vae: str | None = None  # VAE override: .safetensors/.pt/.ckpt file or diffusers folder (kohya --vae)
    tokenizer: str | None = None  # folder or hub id; single files ship none (default CLIP ViT-L/14's)
    v_parameterization: bool = False  # kohya --v_parameterization: the base predicts v (SD 2.x 768-v)
