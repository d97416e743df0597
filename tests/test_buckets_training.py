"""Aspect-ratio buckets in training: bucket choice, one-bucket batches, counts per epoch, the CLI run."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from torch.utils.data import DataLoader

from data.images import upright_size
from inference.models.tokenizer import build_tokenizer
from train.bucket_batches import BucketBatchSampler, bucket_chooser, count_bucket_batches
from train.config import DatasetConfig, TrainConfig, validate
from train.dataset import DreamBoothDataset, collate
from train.errors import ConfigError

from .test_cli import run_train

BUCKETS = {"resolution": 64, "min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_reso_steps": 16}
TRAIN_SIZES = [(128, 64), (120, 60), (64, 128), (96, 96), (80, 80), (100, 50)]  # (w, h)
REPEATS = 3


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _picture(path: Path, size: tuple[int, int], seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Mixed-size train pictures × 3 repeats, and 4 reg pictures (wide and tall) × 1 repeat."""
    root = tmp_path_factory.mktemp("mixed")
    for i, size in enumerate(TRAIN_SIZES):
        _picture(root / "train" / f"{REPEATS}_sls toy" / f"{i:03d}.png", size, i)
    for i, size in enumerate([(128, 64), (64, 128), (128, 64), (64, 64)]):
        _picture(root / "reg" / "1_toy" / f"{i:03d}.png", size, 100 + i)
    return root / "train", root / "reg"


def _dataset(folders: tuple[Path, Path], tokenizer: Any, **overrides: Any) -> DreamBoothDataset:
    train, reg = folders
    values = {"train_dir": str(train), "reg_dir": str(reg), "enable_bucket": True, **BUCKETS, **overrides}
    return DreamBoothDataset(DatasetConfig(**values), tokenizer=tokenizer, seed=3)


def test_a_two_to_one_picture_gets_a_wide_bucket() -> None:
    choose = bucket_chooser(DatasetConfig(**BUCKETS))
    width, height = choose((128, 64))
    assert width > height and width * height <= 64 * 64
    assert choose((64, 128)) == (height, width)
    assert choose((90, 90)) == (64, 64)


def test_no_upscale_keeps_small_pictures_small() -> None:
    choose = bucket_chooser(DatasetConfig(**BUCKETS, enable_bucket=True, bucket_no_upscale=True))
    assert choose((48, 40)) == (48, 32)
    assert choose((256, 256)) == (64, 64)  # larger pictures still fit the resolution² area


def test_batches_hold_one_bucket_at_the_bucket_size(folders, tokenizer) -> None:
    dataset = _dataset(folders, tokenizer)
    buckets = dataset.sample_buckets()
    sampler = BucketBatchSampler(buckets, batch_size=2, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    wide = 0
    for indices, batch in zip(sampler, loader, strict=True):
        assert len({buckets[i] for i in indices}) == 1
        width, height = buckets[indices[0]]
        assert batch["pixel_values"].shape == (len(indices), 3, height, width)
        wide += width > height
    assert wide > 0 and len(set(buckets)) >= 3
    summary = dataset.summary()["bucket_info"]
    assert sum(b["count"] for b in summary["buckets"].values()) == len(dataset)


def test_every_sample_once_per_epoch_and_repeats_counted(folders, tokenizer) -> None:
    dataset = _dataset(folders, tokenizer)
    sampler = BucketBatchSampler(dataset.sample_buckets(), batch_size=4, seed=0)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == count_bucket_batches(dataset.sample_buckets(), 4)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(dataset)))
        records = [dataset.records[dataset._index[i]] for i in flat]
        train = Counter(r.path for r in records if not r.is_reg)
        reg = Counter(r.path for r in records if r.is_reg)
        assert len(train) == len(TRAIN_SIZES) and set(train.values()) == {REPEATS}
        # The 4 reg pictures balance the 18 train samples: 18 reg samples, each picture 4 or 5 times.
        assert sum(reg.values()) == len(TRAIN_SIZES) * REPEATS and set(reg.values()) <= {4, 5}


def test_batches_per_epoch_are_counted_per_bucket() -> None:
    buckets = [(64, 64)] * 5 + [(80, 48)] * 2 + [(48, 80)]
    sampler = BucketBatchSampler(buckets, batch_size=2)
    assert len(sampler) == 3 + 1 + 1 == len(list(sampler))
    assert [len(b) for b in sampler].count(1) == 2  # the short last batch of two buckets


def test_same_seed_same_order_and_epochs_differ() -> None:
    buckets = [(64, 64)] * 12 + [(80, 48)] * 8 + [(48, 80)] * 6

    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(buckets, batch_size=2, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(5, 1) == order(5, 1)
    assert order(5, 1) != order(5, 2)
    assert order(5, 1) != order(6, 1)


def test_without_buckets_pictures_stay_square(folders, tokenizer) -> None:
    dataset = _dataset(folders, tokenizer, enable_bucket=False)
    assert dataset.sample_buckets() == [] and "bucket_info" not in dataset.summary()
    assert dataset[0]["pixel_values"].shape == (3, 64, 64)


def test_upright_size_follows_exif_rotation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°
    Image.new("RGB", (80, 40)).save(path, exif=exif)
    assert upright_size(path) == (40, 80)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bucket_reso_steps": 12}, "multiple of 8"),
        ({"min_bucket_reso": 80}, "between"),
        ({"max_bucket_reso": 48}, "between"),
        ({"min_bucket_reso": 40}, "multiple of dataset.bucket_reso_steps"),
    ],
)
def test_bucket_settings_are_validated(overrides: dict, message: str) -> None:
    dataset = DatasetConfig(train_dir="x", enable_bucket=True, **(BUCKETS | overrides))
    with pytest.raises(ConfigError, match=message):
        validate(TrainConfig(dataset=dataset))


def test_no_upscale_without_buckets_is_refused() -> None:
    with pytest.raises(ConfigError, match="enable_bucket"):
        validate(TrainConfig(dataset=DatasetConfig(train_dir="x", bucket_no_upscale=True)))


def test_cli_trains_on_mixed_sizes_with_buckets(folders, tmp_path: Path) -> None:
    train, reg = folders
    overrides = [f"dataset.{key}={value}" for key, value in BUCKETS.items()]
    overrides += [f"dataset.train_dir={train}", f"dataset.reg_dir={reg}", "dataset.enable_bucket=true"]
    overrides += ["model=tiny", "dataset=folders", "logger=none", "eval.enabled=false"]
    overrides += ["training.batch_size=2", "training.max_train_epochs=1", "name=bucketed"]
    result = run_train(tmp_path / "run", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(tmp_path / "run" / "bucketed.safetensors"), framework="pt") as f:
        meta = f.metadata()
        assert len(list(f.keys())) > 0
    info = json.loads(meta["ss_bucket_info"])
    expected = sum(-(-b["count"] // 2) for b in info["buckets"].values())
    assert len(info["buckets"]) >= 3 and meta["ss_enable_bucket"] == "True"
    assert meta["ss_num_batches_per_epoch"] == meta["ss_steps"] == str(expected)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len([m for m in metrics if "loss/current" in m]) == expected


def test_two_processes_share_the_bucket_batches(folders, tmp_path: Path) -> None:
    """Under a 2-process launch every bucket batch is trained once: each process draws ceil(batches / 2) of
    an epoch's batches, and that count is ss_num_batches_per_epoch (kohya records the per-process count).

    Bucket batches vary in length; a batch sampler that looked fixed-size to accelerate lost whole rounds.
    """
    train, reg = folders
    overrides = [f"dataset.{key}={value}" for key, value in BUCKETS.items()]
    overrides += [f"dataset.train_dir={train}", f"dataset.reg_dir={reg}", "dataset.enable_bucket=true"]
    overrides += ["model=tiny", "dataset=folders", "logger=none", "eval.enabled=false"]
    overrides += ["training.batch_size=2", "training.max_train_epochs=2", "name=shared"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = run_train(tmp_path / "run", *overrides, env=env, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Trained ") == 1  # the summary comes from the main process only
    with safe_open(str(tmp_path / "run" / "shared.safetensors"), framework="pt") as f:
        meta = f.metadata()
    batches = int(meta["ss_num_batches_per_epoch"])
    assert meta["ss_steps"] == str(2 * batches)
    assert meta["ss_total_batch_size"] == "4"
