"""Latent and text-encoder output caching: the same loss as encoding every step, and no stale disk entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.models.tiny import build_tiny
from train.config import DatasetConfig, NetworkConfig, TrainConfig
from train.dataset import DreamBoothDataset, collate
from train.latent_cache import DiskStore, build_latent_cache, weights_digest
from train.model_setup import cache_latents
from train.network.lora import LoRANetwork
from train.precision import Precision
from train.step import diffusion_loss
from train.text_cache import build_text_cache

SIZES = [(96, 64), (64, 96), (64, 64), (80, 80)]  # (w, h): two buckets of their own, two squares


def _folder(root: Path) -> Path:
    for i, size in enumerate(SIZES):
        pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = root / "train" / "2_sls toy" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        path.with_suffix(".txt").write_text(f"(sls toy:1.2), picture {i}")
    return root / "train"


def _dataset(train: Path, bundle, **overrides) -> DreamBoothDataset:
    values = {"train_dir": str(train), "resolution": 64, "flip_aug": True, **overrides}
    dataset = DreamBoothDataset(DatasetConfig(**values), seed=3)
    dataset.bind_tokenizer(bundle.tokenizer)
    dataset.set_epoch(1)
    return dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    bundle = build_tiny(seed=0)
    bundle.freeze()
    return _folder(tmp_path_factory.mktemp("pictures")), bundle


@pytest.mark.parametrize("buckets", [False, True])
def test_cached_latents_and_text_give_the_loss_of_the_uncached_step(world, buckets):
    """Same seed → same posterior sample, noise and timesteps; only the VAE/text-encoder batching differs."""
    train, bundle = world
    options = {"enable_bucket": True, "min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_reso_steps": 16}
    long_weighted = {"max_token_length": 150, "weighted_captions": True}  # 2 chunks, emphasis in the cache
    dataset = _dataset(train, bundle, **(options if buckets else long_weighted))
    network = LoRANetwork(bundle, NetworkConfig(dim=4, alpha=4, train_text_encoder=False))
    indices = [0, 1] if not buckets else [i for i in range(len(dataset)) if dataset.sample_buckets()[i] == dataset.sample_buckets()[0]][:2]  # fmt: skip

    def loss() -> float:
        torch.manual_seed(0)
        batch = collate([dataset[i] for i in indices])
        with torch.no_grad():
            return float(diffusion_loss(bundle, batch, train_text_encoder=False))

    uncached = loss()
    cache, _ = build_latent_cache(dataset, bundle.vae, bundle.latent_scale, True, 3, None)
    dataset.attach_latent_cache(cache.lookup)
    texts = build_text_cache(dataset.unique_captions(), bundle, dataset.caption_inputs, 1)
    dataset.attach_text_cache(texts.lookup)
    assert "pixel_values" not in dataset[indices[0]]
    assert dataset[indices[0]]["encoder_hidden_states"].shape[0] == (77 if buckets else 154)
    cached = loss()
    network.remove()
    # Batched and lone encodes round differently in the last bits; 1e-5 relative is far below any effect.
    assert cached == pytest.approx(uncached, rel=1e-5, abs=1e-7)


def test_disk_cache_reuses_valid_entries_and_never_a_stale_one(world, tmp_path):
    train, bundle = world
    sources = {p: p.read_bytes() for p in train.rglob("*") if p.is_file()}
    dataset = _dataset(train, bundle)
    store = lambda vae: DiskStore(tmp_path / "cache", weights_digest(vae))  # noqa: E731
    entries = 2 * len(SIZES)  # each picture and its mirror image (flip_aug)
    first, reused = build_latent_cache(dataset, bundle.vae, bundle.latent_scale, True, 4, store(bundle.vae))
    assert reused == 0 and len(first) == entries
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == entries
    again, reused = build_latent_cache(dataset, bundle.vae, bundle.latent_scale, True, 4, store(bundle.vae))
    assert reused == entries
    for key, tensors in first.entries.items():
        assert torch.equal(tensors["latent_mean"], again.entries[key]["latent_mean"])

    changed = sorted(train.rglob("*.png"))[0]
    Image.fromarray(np.zeros((64, 96, 3), dtype=np.uint8)).save(changed)  # same size, other content
    sources[changed] = changed.read_bytes()
    fresh = _dataset(train, bundle)
    _, reused = build_latent_cache(fresh, bundle.vae, bundle.latent_scale, True, 4, store(bundle.vae))
    assert reused == entries - 2  # only the changed picture (both sides) was encoded again

    other_vae = build_tiny(seed=5).vae
    rebuilt, reused = build_latent_cache(fresh, other_vae, bundle.latent_scale, True, 4, store(other_vae))
    assert reused == 0
    assert {p: p.read_bytes() for p in train.rglob("*") if p.is_file()} == sources  # sources only read
    assert all(
        not torch.equal(rebuilt.entries[k]["latent_mean"], first.entries[k]["latent_mean"])
        for k in rebuilt.entries
    )


def test_an_unusable_cache_folder_is_one_line_naming_the_key(tmp_path):
    from train.errors import ConfigError

    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    store = DiskStore(blocker / "latents", "vae")
    with pytest.raises(ConfigError, match="dataset.latent_cache_dir"):
        store.write("ab" * 32, {"latent_mean": torch.zeros(4, 2, 2), "latent_std": torch.ones(4, 2, 2)})


def test_without_a_render_the_decoder_leaves_before_caching_and_the_latents_stay_the_same(world):
    """Nothing renders (no eval, no samples): the decoder is freed before the encoding, lowering the peak."""
    train, _ = world
    cfg = TrainConfig(dataset=DatasetConfig(train_dir=str(train), resolution=64, flip_aug=True))
    precision = Precision("no", torch.float32, torch.float32)
    cached = []
    for decoder_needed in (True, False):
        bundle = build_tiny(seed=0)
        bundle.freeze()
        dataset = _dataset(train, bundle)
        before = sum(p.numel() for p in bundle.vae.parameters())
        cache_latents(dataset, bundle, cfg, precision, torch.device("cpu"), decoder_needed=decoder_needed)
        after = sum(p.numel() for p in bundle.vae.parameters())
        assert (bundle.vae.decoder is None) is not decoder_needed
        assert after == before if decoder_needed else after < before / 2
        cached.append([dataset[i]["latent_mean"] for i in range(len(dataset))])
    assert all(torch.equal(a, b) for a, b in zip(*cached, strict=True))
