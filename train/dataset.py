"""The DreamBooth/LoRA training dataset over kohya-style folders: repeats, regularization balance, captions."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data.balance import RegPlan, balance_reg, count_samples
from data.buckets import Box, Size
from data.folders import Subset, scan_dataset_dir
from data.images import (
    color_augment,
    upright_size,
)
from train.bucket_batches import bucket_chooser, bucket_info
from train.caption_ops import caption_options, process_caption
from train.caption_tokens import CLIP_LENGTH, CaptionTokens, caption_tokens
from train.config import DatasetConfig
from train.dataset_captions import dataset_summary, read_captions
from train.errors import ConfigError, DatasetError, LoraSmithError
from train.loss_mask import check_masks, mask_tensor
from train.picture_windows import PictureWindows
from train.preflight import check_pictures
from train.sdxl_step import IDS_2_KEY, POOLED_KEY, SIZE_KEY, picture_conditioning
from train.validation_split import split_validation

log = logging.getLogger(__name__)

MAX_TOKENS = CLIP_LENGTH  # one chunk of CLIP's context: BOS + 75 tokens + EOS
TOKEN_MEMO = 8192  # captions whose token ids are kept (0.6 KiB each)

LatentLookup = Callable[[Path, bool], dict[str, torch.Tensor]]  # (picture, flipped) → latent_mean, latent_std
TextLookup = Callable[[str], dict[str, torch.Tensor]]  # caption → {"encoder_hidden_states": (77·n, D), ...}


@dataclass(frozen=True)
class Record:
    """One distinct picture of the dataset; repeats are indices that point at the same record."""

    path: Path
    caption: str
    is_reg: bool
    folder: str


class SampleError(DatasetError):
    """A DatasetError from __getitem__ that stays one line when a DataLoader worker process raised it.

    torch re-raises a worker's exception in the main process as `type(error)(text)`, where text is
    "Caught SampleError in DataLoader worker process N.\nOriginal Traceback ...\n<module>.SampleError: <msg>";
    the constructor keeps only <msg>, so the CLI prints the same `error:` line as without workers.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].rstrip("\n")
        super().__init__(message)


def _check_config(config: DatasetConfig) -> None:
    if not config.train_dir:
        raise ConfigError(
            "dataset.train_dir is not set: give the folder that holds `N_token class` folders "
            "(with dataset.source=toy, write the toy set first and pass its train folder)"
        )
    if config.keep_tokens < 0:
        raise ConfigError(f"dataset.keep_tokens={config.keep_tokens} must be 0 or more")
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise ConfigError(f"dataset.{key}={getattr(config, key)} must be between 0 and 1")
    if config.caption_dropout_every_n_epochs < 0:
        raise ConfigError(
            f"dataset.caption_dropout_every_n_epochs={config.caption_dropout_every_n_epochs} must be 0 (off) "
            "or more"
        )


class DreamBoothDataset(Dataset):
    """Samples of train_dir (each image `repeats` times) plus balanced reg_dir samples, as kohya counts them."""

    def __init__(
        self,
        config: DatasetConfig,
        tokenizer: Any | None = None,
        seed: int = 0,
        templates: tuple[str, ...] = (),
    ) -> None:
        """`templates`: filled captions that replace every caption (textual inversion's network.template)."""
        _check_config(config)
        self.config = config
        self.caption_options = caption_options(config, templates)
        self.tokenizer = tokenizer
        self._caption_ids: Callable[[str], torch.Tensor] | None = None
        self.seed = seed
        self.epoch = 0
        self.resolution = config.resolution
        extensions = list(config.caption_extensions)
        split_seed = seed if config.validation_seed is None else config.validation_seed
        # Held-out pictures (dataset.validation_split) are never samples: train/validation.py measures them.
        self.train_subsets, self.validation_subsets = split_validation(
            scan_dataset_dir(config.train_dir, False, extensions), config.validation_split, split_seed
        )
        self.reg_subsets: list[Subset] = (
            scan_dataset_dir(config.reg_dir, True, extensions) if config.reg_dir else []
        )
        self.reg_plan: RegPlan = balance_reg(self.train_subsets, self.reg_subsets)
        self._captions, self._uncaptioned = read_captions(
            self._all_subsets(), extensions, self.config.enable_wildcard
        )
        self.records: list[Record] = []
        self._index: list[int] = []
        for subset in self.train_subsets:
            for path in subset.images:
                self._register(path, subset, subset.repeats)
        for entry in self.reg_plan.entries:
            self._register(entry.path, entry.subset, entry.times_used)
        self._pixels_cache: dict[Path, np.ndarray] = {}
        self._masks: dict[Path, np.ndarray] = {}  # centre-cropped loss masks (dataset.masked_loss)
        self._latent_lookup: LatentLookup | None = None
        self._text_lookup: TextLookup | None = None
        self.tokenizer_2: Any = None  # SDXL's second tokenizer (bind_sdxl)
        self._sizes: dict[Path, Size] = {}  # upright (w, h) of each picture, from its header
        # Bucket (w, h) of each picture with enable_bucket; headers only, pixels are decoded when first used.
        self._buckets: dict[Path, Size] = {}
        self._ar_errors: list[float] = []  # |bucket aspect ratio - picture aspect ratio| per picture
        if config.enable_bucket:
            self._buckets, self._ar_errors = self._assign_buckets()
        self.windows = PictureWindows(config, self._buckets, self.picture_size)
        if self.reg_plan.unused:
            log.warning(
                "%d regularization images are not used: an epoch already holds as many reg samples as "
                "train samples (%d); fewer reg images or more train repeats would use them",
                self.reg_plan.unused,
                count_samples(self.train_subsets),
            )

    def _all_subsets(self) -> list[Subset]:
        return self.train_subsets + self.reg_subsets

    def _assign_buckets(self) -> tuple[dict[Path, Size], list[float]]:
        """The bucket of every picture, from its header size, and its aspect-ratio error."""
        choose = bucket_chooser(self.config)
        buckets: dict[Path, Size] = {}
        errors: list[float] = []
        for record in self.records:
            width, height = self.picture_size(record.path)
            bucket = buckets[record.path] = choose((width, height))
            errors.append(abs(bucket[0] / bucket[1] - width / height))
        return buckets, errors

    def picture_size(self, path: Path) -> Size:
        """The upright (w, h) of a picture, from its header (cached)."""
        if path not in self._sizes:
            self._sizes[path] = upright_size(path)
        return self._sizes[path]

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
        """The caption a sample trains on this epoch (train/caption_ops.py: kohya's caption options)."""
        return process_caption(base, self.caption_options, self.epoch, rng)

    def loss_mask(self, path: Path, is_reg: bool, flip: bool, shift: tuple[float, float]) -> torch.Tensor:
        """(1, H, W) in [0, 1]: the mask of this sample's crop and flip (centre crops are kept)."""
        if self.config.random_crop:
            return mask_tensor(self.windows.render_mask(path, is_reg, shift), flip)
        cached = self._masks.get(path)
        if cached is None:
            cached = self._masks[path] = self.windows.render_mask(path, is_reg)
        return mask_tensor(cached, flip)

    def pixels(self, path: Path) -> np.ndarray:
        """The decoded, resized and centre-cropped picture: uint8 (H, W, 3) of its bucket, else (R, R, 3); cached."""
        cached = self._pixels_cache.get(path)
        if cached is None:
            cached = self._pixels_cache[path] = self.windows.render(path)
        return cached

    def crop_plan(self, path: Path) -> tuple[Size, Box]:
        """The output (w, h) of a picture and its centre crop (l, t, r, b) in its own upright pixels, rounded.

        From the header alone, and what pixels(path) shows: the latent cache keys its entries on it.
        """
        return self.windows.crop_plan(path)

    def preload(self) -> None:
        """Decode every centre crop now, e.g. before DataLoader workers fork and share the cache.

        Nothing to do under random_crop (each sample scales its own window) or with a latent cache.
        """
        if self.config.random_crop or self._latent_lookup is not None:
            return
        for record in self.records:
            self.pixels(record.path)

    def unique_pictures(self) -> list[Path]:
        """Every picture a sample can show, once, train then reg, in dataset order."""
        return list(dict.fromkeys(record.path for record in self.records))

    def base_captions(self) -> list[str]:
        """The caption of every training (not regularization) picture, as read from its file or folder."""
        return [record.caption for record in self.records if not record.is_reg]

    def unique_captions(self) -> list[str]:
        """Every caption a sample can have while no caption option is random, once."""
        fixed = random.Random(0)  # never drawn from when no option is random
        return list(dict.fromkeys(self.caption_for(record.caption, fixed) for record in self.records))

    def check_pictures(self, progress: bool = True) -> None:
        """Decode every picture once before training; DatasetError naming the first broken or too-long one."""
        check_pictures(self.unique_pictures(), self.config.max_aspect_ratio, progress=progress)
        if self.config.masked_loss and self.config.mask_dir:
            training = dict.fromkeys(record.path for record in self.records if not record.is_reg)
            check_masks(list(training), Path(self.config.mask_dir))

    def attach_latent_cache(self, lookup: LatentLookup) -> None:
        """Serve cached latents instead of pixels: lookup(path, flipped) → latent_mean, latent_std (4, h/8, w/8).

        __getitem__ then decodes no picture; `flipped` follows the same flip draw as the pixels would. The
        decoded crops (kept by pixels() while the cache was built) are let go.
        """
        for key, on in (("random_crop", self.config.random_crop), ("color_aug", self.config.color_aug)):
            if on:
                raise ConfigError(
                    f"dataset.{key}=true changes each picture every epoch, so its latents cannot be cached: "
                    f"turn off dataset.{key} or latent caching"
                )
        self._latent_lookup = lookup
        self._pixels_cache.clear()

    def attach_text_cache(self, lookup: TextLookup) -> None:
        """Add cached text-encoder outputs: lookup(caption) → the sample's tensors (train/text_cache.py)."""
        changing = self.caption_options.random_settings
        if changing:
            raise ConfigError(
                f"cached text-encoder outputs need fixed captions, but {', '.join(changing)} change them: turn "
                "those off, or turn off dataset.cache_text_encoder_outputs"
            )
        self._text_lookup = lookup

    def bind_tokenizer(
        self, tokenizer: Any, caption_ids: Callable[[str], torch.Tensor] | None = None
    ) -> None:
        """Set the tokenizer once the model is loaded (the folders are checked before that slow step).

        `caption_ids` (caption → (77,) ids) replaces the tokenizer's reading, e.g. with a trained embedding's
        placeholder tokens where its trigger stands.
        """
        self.tokenizer = tokenizer
        self._caption_ids = caption_ids
        self._token_ids = {}

    def bind_sdxl(self, tokenizer_2: Any) -> None:
        """An SDXL run: every sample also carries the caption in the second tokenizer's ids and the picture's
        size/crop conditioning (train/sdxl_step.py)."""
        self.tokenizer_2 = tokenizer_2
        self._token_ids_2: dict[str, torch.Tensor] = {}

    def caption_ids_2(self, caption: str) -> torch.Tensor:
        """(77·n,) ids of the second tokenizer (SDXL), chunked as the first tokenizer's."""
        memo = self._token_ids_2
        if caption not in memo:
            if len(memo) >= TOKEN_MEMO:
                memo.clear()
            c = self.config
            memo[caption] = caption_tokens(
                self.tokenizer_2, caption, c.max_token_length, c.weighted_captions
            ).ids
        return memo[caption].clone()

    def caption_inputs(self, caption: str) -> CaptionTokens:
        """The caption's token ids (77 per chunk, `max_token_length` / 75 chunks) and emphasis weights
        (weighted_captions), chunked as the engine chunks a prompt (train/caption_tokens.py)."""
        if self.tokenizer is None:
            raise RuntimeError("DreamBoothDataset has no tokenizer yet: call bind_tokenizer(tokenizer) first")
        memo: dict[str, CaptionTokens] = self.__dict__.setdefault("_token_ids", {})
        inputs = memo.get(caption)
        if inputs is None:  # captions repeat every epoch; shuffled ones are bounded by the memo's size
            if len(memo) >= TOKEN_MEMO:
                memo.clear()
            inputs = memo[caption] = self._read_inputs(caption)
        return inputs

    def tokenize(self, caption: str) -> torch.Tensor:
        """Token ids padded/truncated to `max_token_length` / 75 chunks of 77: LongTensor (77·n,)."""
        return self.caption_inputs(caption).ids.clone()

    def _read_inputs(self, caption: str) -> CaptionTokens:
        if self._caption_ids is not None:  # the network tokenises (textual inversion's placeholders; 1 chunk)
            return CaptionTokens(self._caption_ids(caption))
        c = self.config
        return caption_tokens(self.tokenizer, caption, c.max_token_length, c.weighted_captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """pixel_values (3, H, W) in [-1, 1] (the bucket's size, else R × R), input_ids (77,), is_reg, caption.

        With a latent cache: latent_mean and latent_std (4, H/8, W/8) instead of pixel_values; with a text
        cache, encoder_hidden_states (77, D) as well. A DatasetError comes out as a one-line SampleError.
        """
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for a dataset of {len(self)}")
        try:
            return self._sample(index)
        except LoraSmithError as error:
            raise SampleError(str(error)) from None

    def _sample(self, index: int) -> dict[str, Any]:
        record = self.records[self._index[index]]
        rng = self.rng_for(index)
        # Drawn even without flip_aug, so turning it on or off leaves the caption draws unchanged.
        flip = rng.random() < 0.5 and self.config.flip_aug
        caption = self.caption_for(record.caption, rng)
        # After the caption's draws, and always drawn, so that neither option shifts the other's draws.
        shift = (rng.random(), rng.random())
        color = (rng.random(), rng.random(), rng.random())
        if self._latent_lookup is not None:
            latents = self._latent_lookup(record.path, flip)
            item = {key: latents[key] for key in ("latent_mean", "latent_std")}
        else:
            item = {"pixel_values": self._pixel_values(record.path, flip, shift, color)}
        if self.config.masked_loss:
            item["loss_mask"] = self.loss_mask(record.path, record.is_reg, flip, shift)
        inputs = self.caption_inputs(caption)
        item.update(input_ids=inputs.ids.clone(), is_reg=record.is_reg, caption=caption)
        if inputs.weights is not None:
            item["token_weights"] = inputs.weights.clone()
        if self._text_lookup is not None:
            item.update(self._text_lookup(caption))
        if self.tokenizer_2 is not None:  # SDXL
            item[IDS_2_KEY] = self.caption_ids_2(caption)
            item[SIZE_KEY] = picture_conditioning(self.windows, record.path, flip)
        return item

    def _pixel_values(
        self, path: Path, flip: bool, shift: tuple[float, float], color: tuple[float, float, float]
    ) -> torch.Tensor:
        """(3, H, W) in [-1, 1]: the crop (random under random_crop), then color_aug, then the flip, as kohya."""
        array = self.windows.render(path, shift) if self.config.random_crop else self.pixels(path)
        if self.config.color_aug:
            array = color_augment(array, color)
        if flip:
            array = array[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 127.5 - 1.0

    def summary(self) -> dict[str, Any]:
        """Counts, folders and tag frequencies, for the LoRA metadata (kohya's ss_* keys) and the run log."""
        bucket_facts = bucket_info(self.sample_buckets(), self._ar_errors) if self._buckets else None
        return dataset_summary(
            self.train_subsets, self.reg_subsets, self.reg_plan, self._captions, len(self), self.resolution,
            self._uncaptioned, bucket_facts,
        )  # fmt: skip


STACKED = (
    "pixel_values", "latent_mean", "latent_std", "loss_mask", "input_ids", "token_weights", "encoder_hidden_states",
    IDS_2_KEY, SIZE_KEY, POOLED_KEY,
)  # fmt: skip


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of one size: pixel_values (B, 3, H, W) or latent_mean/latent_std (B, 4, H/8, W/8),
    input_ids (B, 77·n), token_weights (B, 77·n) for weighted captions, encoder_hidden_states (B, 77·n, D)
    when cached, is_reg bool (B,), captions list[str]."""
    stacked = {key: torch.stack([item[key] for item in batch]) for key in STACKED if key in batch[0]}
    return {
        **stacked,
        "is_reg": torch.tensor([bool(item["is_reg"]) for item in batch], dtype=torch.bool),
        "captions": [item["caption"] for item in batch],
    }
