"""SDXL's training step: both text encoders and the pooled embedding as diffusers' SDXL pipeline encodes a
prompt, kohya's size/crop conditioning per picture, and one loss whose gradients reach both encoders' LoRA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from inference.models.tiny_sdxl import build_tiny_sdxl
from train.caption_tokens import caption_tokens
from train.config import DatasetConfig, NetworkConfig, TrainConfig
from train.dataset import DreamBoothDataset, collate
from train.errors import ConfigError
from train.network.lora import LoRANetwork
from train.sdxl_step import check_sdxl_training, encode_sdxl_text, size_conditioning
from train.step import diffusion_loss
from train.text_cache import build_text_cache

CAPTION = "sls toy, blue background"


@pytest.fixture(scope="module")
def sdxl():
    bundle = build_tiny_sdxl(seed=0)
    bundle.freeze()
    return bundle


def test_text_states_and_pooled_match_diffusers_sdxl_encode_prompt(sdxl):
    pipe = StableDiffusionXLPipeline(
        vae=sdxl.vae, text_encoder=sdxl.text_encoder, text_encoder_2=sdxl.text_encoder_2, tokenizer=sdxl.tokenizer,
        tokenizer_2=sdxl.tokenizer_2, unet=sdxl.unet, scheduler=sdxl.noise_scheduler,
    )  # fmt: skip
    with torch.no_grad():
        theirs, _, theirs_pooled, _ = pipe.encode_prompt(
            CAPTION, device="cpu", do_classifier_free_guidance=False
        )
        ids = caption_tokens(sdxl.tokenizer, CAPTION, 75, False).ids[None]
        ids_2 = caption_tokens(sdxl.tokenizer_2, CAPTION, 75, False).ids[None]
        states, pooled = encode_sdxl_text(sdxl.text_encoder, sdxl.text_encoder_2, ids, ids_2)
    assert states.shape == (1, 77, 64) and pooled.shape == (1, 32)
    assert (states - theirs).abs().max().item() <= 1e-5
    assert (pooled - theirs_pooled).abs().max().item() <= 1e-5

    # 150 tokens: two chunks side by side, the pooled embedding from the first one
    long_ids = caption_tokens(sdxl.tokenizer, CAPTION, 150, False).ids[None]
    long_ids_2 = caption_tokens(sdxl.tokenizer_2, CAPTION, 150, False).ids[None]
    with torch.no_grad():
        long_states, long_pooled = encode_sdxl_text(
            sdxl.text_encoder, sdxl.text_encoder_2, long_ids, long_ids_2
        )
    assert long_states.shape == (1, 154, 64)
    assert torch.allclose(long_states[:, :77], states) and torch.allclose(long_pooled, pooled)


@pytest.mark.parametrize(
    ("original", "bucket", "plain", "flipped"),
    [
        ((1200, 800), (1152, 768), (800, 1200, 0, 0, 768, 1152), (800, 1200, 0, 0, 768, 1152)),  # same ratio
        ((999, 800), (1152, 896), (800, 999, 0, 16, 896, 1152), (800, 999, 0, 17, 896, 1152)),  # wider bucket
        (
            (800, 1000),
            (768, 1024),
            (1000, 800, 32, 0, 1024, 768),
            (1000, 800, 32, 0, 1024, 768),
        ),  # taller one
    ],
)
def test_size_conditioning_is_kohyas(original, bucket, plain, flipped):
    assert size_conditioning(original, bucket, flipped=False).tolist() == list(plain)
    assert size_conditioning(original, bucket, flipped=True).tolist() == list(flipped)


def _pictures(tmp_path: Path, count: int = 2) -> Path:
    folder = tmp_path / "train" / "2_sls toy"
    folder.mkdir(parents=True)
    for i, size in enumerate([(48, 32), (32, 48), (40, 40)][:count]):
        Image.fromarray(np.full((size[1], size[0], 3), 60 * i + 40, dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(CAPTION)
    return tmp_path / "train"


def test_an_sdxl_batch_trains_both_encoders_lora_with_the_size_conditioning(sdxl, tmp_path):
    config = DatasetConfig(train_dir=str(_pictures(tmp_path)), resolution=32, enable_bucket=True,
                           min_bucket_reso=16, max_bucket_reso=64, bucket_reso_steps=16)  # fmt: skip
    dataset = DreamBoothDataset(config, sdxl.tokenizer)
    dataset.bind_sdxl(sdxl.tokenizer_2)
    item = dataset[0]
    # 48 x 32 and 32 x 48 pictures in the 32 x 32 bucket: fitted inside it they would sit 5 px from its edge
    wide = dataset.picture_size(dataset.records[dataset._index[0]].path) == (48, 32)
    assert item["pixel_values"].shape[1:] == (32, 32)
    assert item["size_conditioning"].tolist() == ([32, 48, 5, 0, 32, 32] if wide else [48, 32, 0, 5, 32, 32])
    assert torch.equal(item["input_ids_2"], caption_tokens(sdxl.tokenizer_2, CAPTION, 75, False).ids)
    batch = collate([item])

    network = LoRANetwork(sdxl, NetworkConfig(dim=2))
    torch.manual_seed(0)
    loss = diffusion_loss(sdxl, batch)
    loss.backward()
    grads = {prefix: 0.0 for prefix in ("lora_te1", "lora_te2", "lora_unet")}
    untouched = set()
    for layer in network.layers:
        name = layer.target.kohya_name
        if layer.up.weight.grad is None:
            untouched.add(name.split("_layers_")[-1].split("_")[0] if "_te" in name else name)
            continue
        grads["_".join(name.split("_")[:2])] += layer.up.weight.grad.abs().sum().item()
    assert all(total > 0 for total in grads.values()), grads
    # the states are the penultimate layers: the first encoder's last layer (1 of 0..1) gets no gradient, as in
    # kohya; the second's does, through the pooled embedding
    assert untouched == {"1"}
    assert all(
        layer.up.weight.grad is not None for layer in network.layers if "lora_te2" in layer.target.kohya_name
    )

    # the time ids are the UNet's: other size numbers give another loss from the same noise
    batch["size_conditioning"] = batch["size_conditioning"] + 64
    torch.manual_seed(0)
    with torch.no_grad():
        assert diffusion_loss(sdxl, batch).item() != pytest.approx(loss.item(), abs=1e-7)
    network.remove()


def test_cached_sdxl_text_outputs_give_the_loss_of_the_uncached_step(sdxl, tmp_path):
    """Both encoders' states and the pooled embedding, cached once per caption (two 77-token chunks, emphasis
    applied), give the step what encoding every step gives; only the batching of the encoders differs."""
    train = _pictures(tmp_path)
    for i, path in enumerate(sorted((train / "2_sls toy").glob("*.txt"))):
        path.write_text(f"(sls toy:1.3), picture {i}, " + "blue background, " * 12)
    config = DatasetConfig(train_dir=str(train), resolution=32, max_token_length=150, weighted_captions=True)
    dataset = DreamBoothDataset(config, sdxl.tokenizer)
    dataset.bind_sdxl(sdxl.tokenizer_2)

    def loss() -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            return float(diffusion_loss(sdxl, collate([dataset[0], dataset[1]]), train_text_encoder=False))

    uncached = loss()
    captions = dataset.unique_captions()
    cache = build_text_cache(captions, sdxl, dataset.caption_inputs, caption_ids_2=dataset.caption_ids_2)
    dataset.attach_text_cache(cache.lookup)
    item = dataset[0]
    width = sdxl.text_encoder.config.hidden_size + sdxl.text_encoder_2.config.hidden_size
    assert item["encoder_hidden_states"].shape == (154, width)
    assert item["pooled_text_embeds"].shape == (sdxl.text_encoder_2.config.projection_dim,)
    assert len(cache) == 2
    cached = loss()
    assert cached != pytest.approx(0.0) and cached == pytest.approx(uncached, rel=1e-5, abs=1e-7)
    # the cache is what the step uses: other pooled embeddings give another loss from the same noise
    cache.entries[dataset[0]["caption"]]["pooled_text_embeds"] += 1.0
    assert loss() != pytest.approx(uncached, rel=1e-4)


def test_what_sdxl_runs_refuse(sdxl):
    check_sdxl_training(TrainConfig(), sdxl)
    for overrides, key in (({"model": {"clip_skip": 2}}, "model.clip_skip"),):
        cfg = TrainConfig()
        for section, values in overrides.items():
            for name, value in values.items():
                setattr(getattr(cfg, section), name, value)
        with pytest.raises(ConfigError, match=rf"^{key}: .*tiny_sdxl is SDXL"):
            check_sdxl_training(cfg, sdxl)


def test_a_run_on_sdxl_saves_kohyas_sdxl_lora(tmp_path, monkeypatch):
    """The whole run (loader replaced by tiny SDXL: model loading is another module's work): two steps, the
    file in kohya's SDXL layout, both encoders at their own logged rates."""
    import json

    from safetensors import safe_open

    from tests.test_config import _typed
    from train.run import train

    monkeypatch.setattr("train.run.load_base_model", lambda cfg: build_tiny_sdxl(seed=0))
    train_dir = _pictures(tmp_path)
    cfg = _typed(
        tmp_path, f"dataset.train_dir={train_dir}", "dataset.resolution=32", "logger=none", "eval.enabled=false",
        "training.max_train_steps=2", "network.dim=2", "optimizer.text_encoder_lr=[5e-5,2e-5]",
        "training.mixed_precision=no",
    )  # fmt: skip
    result = train(cfg, tmp_path / "run")
    with safe_open(str(result.lora_path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert {key.split("_")[1] for key in keys} == {"unet", "te1", "te2"}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight" in keys
    assert (
        meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_text_encoder_lr"] == "[5e-05, 2e-05]"
    )
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = next(entry for entry in logged if "lr/textencoder1" in entry)
    assert (rates["lr/textencoder1"], rates["lr/textencoder2"]) == (5e-5, 2e-5)


def test_an_sdxl_run_with_cached_text_outputs_trains_the_unet_lora_of_an_uncached_run(tmp_path, monkeypatch):
    """kohya's common SDXL choice (network_train_unet_only + cache_text_encoder_outputs) through the whole
    run: the encoders are freed after caching, and the LoRA is the one encoding every step trains. A held-out
    picture (validation_split) is measured at every step, with both encoders, pooled and size ids."""
    import json

    from safetensors.torch import load_file

    from tests.test_config import _typed
    from train.run import train

    monkeypatch.setattr("train.run.load_base_model", lambda cfg: build_tiny_sdxl(seed=0))
    train_dir = _pictures(tmp_path, count=3)
    loras, held_out = {}, {}
    for cached in (False, True):
        cfg = _typed(
            tmp_path, f"dataset.train_dir={train_dir}", "dataset.resolution=32", "logger=none",
            "eval.enabled=false", "training.max_train_steps=3", "network.dim=2", "network.train_text_encoder=false",
            "training.mixed_precision=no", f"dataset.cache_text_encoder_outputs={str(cached).lower()}",
            "dataset.validation_split=0.34", "training.validate_every_n_steps=1",
        )  # fmt: skip
        loras[cached] = load_file(train(cfg, tmp_path / f"run_{cached}").lora_path)
        logged = (tmp_path / f"run_{cached}" / "metrics.jsonl").read_text().splitlines()
        held_out[cached] = [e["loss/validation"] for e in map(json.loads, logged) if "loss/validation" in e]
    assert len(held_out[True]) >= 3 and len(set(held_out[True])) > 1  # it moves with the LoRA
    assert held_out[True] == pytest.approx(held_out[False], rel=1e-4)
    assert loras[True].keys() == loras[False].keys() and all(k.startswith("lora_unet_") for k in loras[True])
    for key, value in loras[False].items():
        torch.testing.assert_close(loras[True][key], value, rtol=1e-4, atol=1e-6)
    assert any(
        k.endswith("lora_up.weight") and v.abs().sum() > 0 for k, v in loras[True].items()
    )  # it trained
