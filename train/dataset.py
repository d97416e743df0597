"""The DreamBooth/LoRA training dataset over kohya-style folders: repeats, regularization balance, captions."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.balance import RegPlan, balance_reg, count_samples
from data.buckets import Size, bucket_resize_box
from data.captions import drop_caption, read_caption, shuffle_tags, tag_frequency
from data.folders import Subset, scan_dataset_dir
from data.images import load_rgb, resize_center_crop, upright_size
from train.bucket_batches import bucket_chooser, bucket_info
from train.config import DatasetConfig
from train.errors import ConfigError

log = logging.getLogger(__name__)

MAX_TOKENS = 77  # CLIP's context: BOS + 75 tokens + EOS


@dataclass(frozen=True)
class Record:
    """One distinct picture of the dataset; repeats are indices that point at the same record."""

    path: Path
    caption: str
    is_reg: bool
    folder: str


def _check_config(config: DatasetConfig) -> None:
    if not config.train_dir:
        raise ConfigError(
            "dataset.train_dir is not set: give the folder that holds `N_token class` folders "
            "(with dataset.source=toy, write the toy set first and pass its train folder)"
        )
    if config.keep_tokens < 0:
        raise ConfigError(f"dataset.keep_tokens={config.keep_tokens} must be 0 or more")
    if not 0.0 <= config.caption_dropout_rate <= 1.0:
        raise ConfigError(
            f"dataset.caption_dropout_rate={config.caption_dropout_rate} must be between 0 and 1"
        )


class DreamBoothDataset(Dataset):
    """Samples of train_dir (each image `repeats` times) plus balanced reg_dir samples, as kohya counts them."""

    def __init__(self, config: DatasetConfig, tokenizer: Any | None = None, seed: int = 0) -> None:
        _check_config(config)
        self.config = config
        self.tokenizer = tokenizer
        self.seed = seed
        self.epoch = 0
        self.resolution = config.resolution
        extensions = list(config.caption_extensions)
        self.train_subsets: list[Subset] = scan_dataset_dir(config.train_dir, False, extensions)
        self.reg_subsets: list[Subset] = (
            scan_dataset_dir(config.reg_dir, True, extensions) if config.reg_dir else []
        )
        self.reg_plan: RegPlan = balance_reg(self.train_subsets, self.reg_subsets)
        self._captions, self._uncaptioned = self._read_captions(extensions)
        self.records: list[Record] = []
        self._index: list[int] = []
        for subset in self.train_subsets:
            for path in subset.images:
                self._register(path, subset, subset.repeats)
        for entry in self.reg_plan.entries:
            self._register(entry.path, entry.subset, entry.times_used)
        self._pixels_cache: dict[Path, np.ndarray] = {}
        # Bucket (w, h) of each picture with enable_bucket; headers only, pixels are decoded when first used.
        self._buckets: dict[Path, Size] = {}
        self._ar_errors: list[float] = []  # |bucket aspect ratio - picture aspect ratio| per picture
        if config.enable_bucket:
            self._buckets, self._ar_errors = self._assign_buckets()
        if self.reg_plan.unused:
            log.warning(
                "%d regularization images are not used: an epoch already holds as many reg samples as "
                "train samples (%d); fewer reg images or more train repeats would use them",
                self.reg_plan.unused,
                count_samples(self.train_subsets),
            )

    def _all_subsets(self) -> list[Subset]:
        return self.train_subsets + self.reg_subsets

    def _read_captions(self, extensions: list[str]) -> tuple[dict[Path, str], int]:
        """Caption of every image (file, else folder class tokens); warn once about the uncaptioned ones."""
        captions: dict[Path, str] = {}
        missing = empty = 0
        example = ""
        for subset in self._all_subsets():
            for path in subset.images:
                text = read_caption(path, extensions)
                if text is None:
                    missing += 1
                    empty += not subset.class_tokens
                    example = example or f"`{subset.name}` → '{subset.class_tokens}'"
                    text = subset.class_tokens
                captions[path] = text
        if missing:
            exts = "/".join(extensions)
            tail = (
                f"; {empty} of them have no class tokens either and train on an empty caption"
                if empty
                else ""
            )
            log.warning(
                "%d of %d images have no caption file (%s): they train on their folder's class tokens "
                "(e.g. %s)%s",
                missing,
                len(captions),
                exts,
                example,
                tail,
            )
        return captions, missing

    def _assign_buckets(self) -> tuple[dict[Path, Size], list[float]]:
        """The bucket of every picture, from its header size, and its aspect-ratio error."""
        choose = bucket_chooser(self.config)
        buckets: dict[Path, Size] = {}
        errors: list[float] = []
        for record in self.records:
            width, height = upright_size(record.path)
            bucket = buckets[record.path] = choose((width, height))
            errors.append(abs(bucket[0] / bucket[1] - width / height))
        return buckets, errors

    def sample_buckets(self) -> list[Size]:
        """The bucket (w, h) of every sample index (repeats included); [] without enable_bucket."""
        if not self._buckets:
            return []
        return [self._buckets[self.records[record].path] for record in self._index]

    def _register(self, path: Path, subset: Subset, times: int) -> None:
        self.records.append(Record(path, self._captions[path], subset.is_reg, subset.name))
        self._index.extend([len(self.records) - 1] * times)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations __getitem__ draws (call before each epoch's DataLoader pass)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._index)

    def rng_for(self, index: int) -> random.Random:
        """The random stream of one sample in the current epoch: the same (seed, epoch, index) → same draws."""
        # A string seed is hashed with SHA-512 by `random`, independent of PYTHONHASHSEED and process.
        return random.Random(f"{self.seed}/{self.epoch}/{index}")

    def caption_for(self, base: str, rng: random.Random) -> str:
        """Apply shuffle_caption/keep_tokens, then caption dropout, to one caption."""
        caption = shuffle_tags(base, self.config.keep_tokens, rng) if self.config.shuffle_caption else base
        return drop_caption(caption, self.config.caption_dropout_rate, rng)

    def pixels(self, path: Path) -> np.ndarray:
        """The decoded, resized and centre-cropped picture: uint8 (H, W, 3) of its bucket, else (R, R, 3); cached."""
        cached = self._pixels_cache.get(path)
        if cached is None:
            bucket = self._buckets.get(path)
            if bucket is None:
                image = resize_center_crop(load_rgb(path), self.resolution, self.resolution)
            else:
                image = load_rgb(path)
                fit = bucket_resize_box(image.size, bucket)
                if fit.resized != image.size:
                    image = image.resize(fit.resized, Image.Resampling.LANCZOS)
                image = image.crop(fit.crop)
            cached = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only
            self._pixels_cache[path] = cached
        return cached

    def preload(self) -> None:
        """Decode every picture now, e.g. before DataLoader workers fork and share the cache."""
        for record in self.records:
            self.pixels(record.path)

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Set the tokenizer once the model is loaded (the folders are checked before that slow step)."""
        self.tokenizer = tokenizer

    def tokenize(self, caption: str) -> torch.Tensor:
        """Token ids padded/truncated to 77: LongTensor (77,)."""
        if self.tokenizer is None:
            raise RuntimeError("DreamBoothDataset has no tokenizer yet: call bind_tokenizer(tokenizer) first")
        ids = self.tokenizer(
            caption, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids[0]
        return ids.to(torch.long)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """pixel_values (3, H, W) in [-1, 1] (the bucket's size, else R × R), input_ids (77,), is_reg, caption."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for a dataset of {len(self)}")
        record = self.records[self._index[index]]
        rng = self.rng_for(index)
        # Drawn even without flip_aug, so turning it on or off leaves the caption draws unchanged.
        flip = rng.random() < 0.5
        caption = self.caption_for(record.caption, rng)
        array = self.pixels(record.path)
        if self.config.flip_aug and flip:
            array = array[:, ::-1]
        pixel_values = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 127.5 - 1.0
        return {
            "pixel_values": pixel_values,
            "input_ids": self.tokenize(caption),
            "is_reg": record.is_reg,
            "caption": caption,
        }

    def summary(self) -> dict[str, Any]:
        """Counts, folders and tag frequencies, for the LoRA metadata (kohya's ss_* keys) and the run log."""

        def dirs(subsets: list[Subset]) -> dict[str, dict[str, int]]:
            return {s.name: {"n_repeats": s.repeats, "img_count": len(s.images)} for s in subsets}

        frequency: dict[str, dict[str, int]] = {}
        for subset in self._all_subsets():
            counts = tag_frequency(self._captions[path] for path in subset.images)
            merged = frequency.setdefault(subset.name, {})
            for tag, n in counts.items():
                merged[tag] = merged.get(tag, 0) + n
        num_reg_samples = self.reg_plan.num_samples
        return {
            "num_train_images": sum(len(s.images) for s in self.train_subsets),
            "num_reg_images": sum(len(s.images) for s in self.reg_subsets),
            "num_samples_per_epoch": len(self),
            "num_train_samples_per_epoch": len(self) - num_reg_samples,
            "num_reg_samples_per_epoch": num_reg_samples,
            "dataset_dirs": dirs(self.train_subsets),
            "reg_dataset_dirs": dirs(self.reg_subsets),
            "tag_frequency": frequency,
            "resolution": self.resolution,
            "unused_reg_images": self.reg_plan.unused,
            "num_images_without_caption": self._uncaptioned,
            **({"bucket_info": bucket_info(self.sample_buckets(), self._ar_errors)} if self._buckets else {}),
        }


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of one size: pixel_values (B, 3, H, W), input_ids (B, 77), is_reg bool (B,), captions list[str]."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "input_ids": torch.stack([item["input_ids"] for item in batch]),
        "is_reg": torch.tensor([bool(item["is_reg"]) for item in batch], dtype=torch.bool),
        "captions": [item["caption"] for item in batch],
    }
