"""The committed toy base model is intact and loads through the diffusers-folder path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from inference.models.loading import TOY_MODEL_DIR, load_base_model
from train.config import ModelConfig


def test_checksums_match_the_committed_files():
    listed = {}
    for line in (TOY_MODEL_DIR / "CHECKSUMS.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {
        p.relative_to(TOY_MODEL_DIR).as_posix()
        for p in TOY_MODEL_DIR.rglob("*")
        if p.is_file() and p.name != "CHECKSUMS.sha256"
    }
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((TOY_MODEL_DIR / name).read_bytes()).hexdigest() == digest, name


def test_toy_model_has_sd_geometry_and_a_standard_tokenizer():
    bundle = load_base_model(ModelConfig(kind="toy"))
    assert bundle.vae_scale_factor == 8 and bundle.vae.config.latent_channels == 4
    assert bundle.unet.config.cross_attention_dim == bundle.text_encoder.config.hidden_size
    assert {"vocab.json", "merges.txt"} <= {p.name for p in Path(TOY_MODEL_DIR, "tokenizer").iterdir()}
    ids = bundle.tokenizer("sls star, blue background").input_ids
    assert (
        len(ids) == 7 and bundle.tokenizer.decode(ids[1:-1]).replace(" ,", ",") == "sls star, blue background"
    )
