"""The README of `models/toy_xl`: what it is, how it was built, its build report and fidelity grid."""

from __future__ import annotations

import torch

from inference.models.bundle import ModelBundle


def _millions(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M parameters"


def _components(model: ModelBundle) -> list[str]:
    unet, first, second = model.unet.config, model.text_encoder.config, model.text_encoder_2.config
    rows = {
        "unet": f"{_millions(model.unet)}, blocks {tuple(unet.block_out_channels)}, transformer layers "
        f"{tuple(unet.transformer_layers_per_block)} (none at the first level), `text_time` "
        f"micro-conditioning, cross-attention {unet.cross_attention_dim} wide",
        "vae": f"models/toy's VAE, unchanged ({_millions(model.vae)}, 8 x 8 x 4 latents, its own "
        f"scaling factor {model.vae.config.scaling_factor:.5f} rather than SDXL's 0.13025)",
        "text_encoder": f"{_millions(model.text_encoder)}, {first.num_hidden_layers}-layer CLIPTextModel, "
        f"width {first.hidden_size}",
        "text_encoder_2": f"{_millions(model.text_encoder_2)}, {second.num_hidden_layers}-layer "
        f"CLIPTextModelWithProjection, width {second.hidden_size}, pooled {second.projection_dim}",
        "tokenizer": "models/toy's CLIP tokenizer (pads with its end token)",
        "tokenizer_2": 'the same files, padding with "!" (id 0) as SDXL\'s OpenCLIP tokenizer',
    }
    return [f"| `{k}/` | {v} |" for k, v in rows.items()]


def sdxl_readme(model: ModelBundle, command: str, report: dict, settings: dict) -> str:
    """README.md text; `settings` are the build settings that decide the model."""
    lines = [
        "# models/toy_xl — LoraSmith's bundled toy SDXL",
        "",
        "The SDXL architecture (diffusers' StableDiffusionXLPipeline layout: two text encoders, the second's",
        "pooled output and the size/crop time ids in the UNet's added embedding) at toy widths, trained on",
        "the toy world's base pictures like `models/toy`. It never saw the held-out concepts (`sls star`,",
        "`chk style`): `+experiment=char_lora_xl` teaches it the character. Training used the engine's",
        "conditioning: both encoders' penultimate layers side by side, pooled = the second's projection,",
        "time ids (64, 64, 0, 0, 64, 64), and all zeros for a dropped caption (the engine's empty negative).",
        "",
        f"Built with `{command}` (reads models/toy's VAE and tokenizer), seed {settings['seed']}.",
        "",
        "| component | what |",
        "|---|---|",
        *_components(model),
        "",
        "## Build report",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in report.items()],
        "",
        f"`base_fidelity` is the analytic scorer's mean over {settings['fidelity_prompts']} prompts x "
        f"{settings['fidelity_seeds']} seeds (Euler, 20 steps, CFG 5) rendered by LoraSmith's SDXL engine:",
        "the fraction of stated attributes (background colour, shape colour, shape) the pictures show.",
        "",
        "![base-world prompts x seeds](base_grid.png)",
        "",
        "## Settings",
        "",
        "```",
        *[f"{k}: {v}" for k, v in settings.items()],
        "```",
        "",
        "`CHECKSUMS.sha256` lists every file (`sha256sum -c CHECKSUMS.sha256`).",
        "",
    ]
    return "\n".join(lines)
