"""The training dataset: counts, items, captions, determinism; and the image loading under it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data.errors import DatasetError
from data.images import load_rgb, resize_center_crop
from inference.models.tokenizer import build_tokenizer
from train.config import DatasetConfig
from train.dataset import MAX_TOKENS, DreamBoothDataset, collate
from train.errors import ConfigError

RES = 16


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _half_image(path: Path, left: tuple[int, int, int], right: tuple[int, int, int], size: int = 24) -> None:
    """Left half one colour, right half another: a horizontal flip is visible."""
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[:, : size // 2] = left
    array[:, size // 2 :] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """3 train images × 10 repeats (one without caption) and 7 reg images × 1 repeat."""
    train = tmp_path / "train" / "10_sls toy"
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        _half_image(train / f"{i:03d}.png", color, (255, 255, 255))
    (train / "000.txt").write_text("sls toy, red, left, big, shape")
    (train / "001.txt").write_text("sls toy, green")
    reg = tmp_path / "reg" / "1_toy"
    for i in range(7):
        _half_image(reg / f"{i:03d}.png", (10 * i, 0, 0), (0, 0, 0))
        (reg / f"{i:03d}.txt").write_text(f"toy, shade {i}")
    return tmp_path / "train", tmp_path / "reg"


def _config(folders: tuple[Path, Path], **overrides: Any) -> DatasetConfig:
    train, reg = folders
    values = {"train_dir": str(train), "reg_dir": str(reg), "resolution": RES} | overrides
    return DatasetConfig(**values)


def test_length_is_train_repeats_plus_balanced_reg(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders), tokenizer)
    assert len(ds) == 3 * 10 + 30
    assert [ds[i]["is_reg"] for i in range(len(ds))] == [False] * 30 + [True] * 30
    no_reg = DreamBoothDataset(_config(folders, reg_dir=None), tokenizer)
    assert len(no_reg) == 30


def test_item_shapes_and_ranges(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders), tokenizer)
    item = ds[0]
    assert item["pixel_values"].shape == (3, RES, RES) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
    # Left half pure red, right half white: exact values survive the resize.
    assert torch.allclose(item["pixel_values"][:, 8, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose(item["pixel_values"][:, 8, -1], torch.tensor([1.0, 1.0, 1.0]))
    assert item["input_ids"].shape == (MAX_TOKENS,) and item["input_ids"].dtype == torch.long
    assert item["is_reg"] is False and item["caption"] == "sls toy, red, left, big, shape"
    assert ds[-1]["is_reg"] is True
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_caption_falls_back_to_class_tokens_with_one_warning(
    folders: tuple[Path, Path], tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ds = DreamBoothDataset(_config(folders), tokenizer)
    assert ds[20]["caption"] == "sls toy"  # third image: samples 20-29
    warnings = [r.getMessage() for r in caplog.records if "no caption file" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 10 images")
    assert ds.summary()["num_images_without_caption"] == 1


def test_long_captions_are_truncated(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders), tokenizer)
    ids = ds.tokenize(", ".join(["red"] * 200))
    assert ids.shape == (MAX_TOKENS,)


def test_determinism_for_a_seed_and_variation_across_epochs(
    folders: tuple[Path, Path], tokenizer: Any
) -> None:
    config = _config(folders, shuffle_caption=True, keep_tokens=1, caption_dropout_rate=0.2, flip_aug=True)
    a, b = DreamBoothDataset(config, tokenizer, seed=7), DreamBoothDataset(config, tokenizer, seed=7)

    def epoch_items(ds: DreamBoothDataset, epoch: int) -> list[tuple[str, bytes]]:
        ds.set_epoch(epoch)
        return [(ds[i]["caption"], ds[i]["pixel_values"].numpy().tobytes()) for i in range(10)]

    first = epoch_items(a, 3)
    assert first == epoch_items(b, 3)
    assert epoch_items(a, 4) != first
    assert epoch_items(a, 3) == first
    assert epoch_items(DreamBoothDataset(config, tokenizer, seed=8), 3) != first


def test_shuffle_keeps_tokens_and_dropout_empties(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders, shuffle_caption=True, keep_tokens=2), tokenizer)
    captions = {ds[i]["caption"] for i in range(10)}
    assert all(c.startswith("sls toy, red, ") for c in captions)
    assert len(captions) > 1
    dropped = DreamBoothDataset(_config(folders, caption_dropout_rate=1.0), tokenizer)
    assert {dropped[i]["caption"] for i in range(len(dropped))} == {""}


def test_caption_options_reach_the_samples_and_the_epoch_counts(
    folders: tuple[Path, Path], tokenizer: Any
) -> None:
    (folders[0] / "10_sls toy" / "001.txt").write_text("sls toy, {green|teal}\nsls toy, lime")
    config = _config(
        folders, caption_prefix="photo of", enable_wildcard=True, caption_dropout_every_n_epochs=2
    )
    ds = DreamBoothDataset(config, tokenizer)
    seen = set()
    for epoch in (1, 3, 5, 7):  # odd epochs keep their captions
        ds.set_epoch(epoch)
        seen |= {ds[i]["caption"] for i in range(len(ds))}
    assert {"photo of sls toy, green", "photo of sls toy, teal", "photo of sls toy, lime"} <= seen
    assert all(c.startswith("photo of ") for c in seen)
    ds.set_epoch(2)
    assert {ds[i]["caption"] for i in range(len(ds))} == {""}


def test_flip_aug_flips_some_samples(folders: tuple[Path, Path], tokenizer: Any) -> None:
    plain = DreamBoothDataset(_config(folders), tokenizer)[0]["pixel_values"]
    ds = DreamBoothDataset(_config(folders, flip_aug=True), tokenizer)
    flipped = [torch.equal(ds[i]["pixel_values"], plain.flip(-1)) for i in range(10)]
    same = [torch.equal(ds[i]["pixel_values"], plain) for i in range(10)]
    assert any(flipped) and any(same) and all(f != s for f, s in zip(flipped, same, strict=True))


def test_summary(folders: tuple[Path, Path], tokenizer: Any) -> None:
    summary = DreamBoothDataset(_config(folders), tokenizer).summary()
    assert summary["num_train_images"] == 3 and summary["num_reg_images"] == 7
    assert summary["num_samples_per_epoch"] == 60 and summary["num_reg_samples_per_epoch"] == 30
    assert summary["dataset_dirs"] == {"10_sls toy": {"n_repeats": 10, "img_count": 3}}
    assert summary["reg_dataset_dirs"] == {"1_toy": {"n_repeats": 1, "img_count": 7}}
    assert summary["tag_frequency"]["10_sls toy"]["sls toy"] == 3
    assert summary["tag_frequency"]["1_toy"]["toy"] == 7
    assert summary["resolution"] == RES and summary["unused_reg_images"] == 0


def test_unused_reg_images_are_counted_and_warned(
    tmp_path: Path, tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _half_image(tmp_path / "train" / "2_sls" / "a.png", (255, 0, 0), (0, 0, 0))
    for i in range(5):
        _half_image(tmp_path / "reg" / "1_toy" / f"{i}.png", (0, 0, 0), (0, 0, 0))
    with caplog.at_level(logging.WARNING):
        ds = DreamBoothDataset(_config((tmp_path / "train", tmp_path / "reg")), tokenizer)
    assert len(ds) == 2 + 2 and ds.summary()["unused_reg_images"] == 3
    assert "3 regularization images are not used" in caplog.text


def test_collate_and_dataloader(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders), tokenizer)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate)))
    assert batch["pixel_values"].shape == (4, 3, RES, RES)
    assert batch["input_ids"].shape == (4, MAX_TOKENS) and batch["input_ids"].dtype == torch.long
    assert batch["is_reg"].dtype == torch.bool and batch["is_reg"].shape == (4,)
    assert len(batch["captions"]) == 4


def test_pixels_are_cached_per_path(folders: tuple[Path, Path], tokenizer: Any) -> None:
    ds = DreamBoothDataset(_config(folders), tokenizer)
    path = ds.records[0].path
    assert ds.pixels(path) is ds.pixels(path)


def test_user_files_are_never_modified(folders: tuple[Path, Path], tokenizer: Any) -> None:
    root = folders[0].parent

    def snapshot() -> dict[str, tuple[str, int]]:
        return {
            str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    ds = DreamBoothDataset(_config(folders, flip_aug=True, shuffle_caption=True), tokenizer)
    ds.preload()
    _ = [ds[i] for i in range(len(ds))]
    assert snapshot() == before


def test_non_utf8_caption_fails_at_construction(folders: tuple[Path, Path], tokenizer: Any) -> None:
    bad = folders[0] / "10_sls toy" / "002.txt"
    bad.write_bytes("rôle".encode("cp1252"))
    with pytest.raises(DatasetError, match="002.txt"):
        DreamBoothDataset(_config(folders), tokenizer)


@pytest.mark.parametrize(
    "overrides", [{"train_dir": None}, {"keep_tokens": -1}, {"caption_dropout_rate": 1.5}]
)
def test_bad_config_values(folders: tuple[Path, Path], tokenizer: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DreamBoothDataset(_config(folders, **overrides), tokenizer)


def test_load_rgb_composites_transparency_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "a.png")
    image = load_rgb(tmp_path / "a.png")
    assert image.mode == "RGB" and image.getpixel((1, 1)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (0, 0, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 255, 0] * 256)
    palette.save(tmp_path / "p.png", transparency=0)
    assert load_rgb(tmp_path / "p.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("L", (2, 2), 100).save(tmp_path / "l.png")
    assert load_rgb(tmp_path / "l.png").getpixel((0, 0)) == (100, 100, 100)


def test_load_rgb_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    image.save(tmp_path / "a.jpg", exif=exif)
    assert load_rgb(tmp_path / "a.jpg").size == (2, 6)


def test_load_rgb_unreadable_names_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    for name in ("cut.png", "text.jpg"):
        with pytest.raises(DatasetError) as info:
            load_rgb(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "re-save it" in str(info.value)


def test_resize_center_crop_covers_and_centres() -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, 10:30] = 255  # white centre band, black sides
    out = resize_center_crop(Image.fromarray(array), 10, 10)
    assert out.size == (10, 10)
    assert np.asarray(out)[5, 5].tolist() == [255, 255, 255]
    tall = resize_center_crop(Image.new("RGB", (7, 30)), 16, 8)
    assert tall.size == (16, 8)


def test_plain_batches_hold_only_the_plain_keys(folders: tuple[Path, Path], tokenizer: Any) -> None:
    """Without caches nothing new appears: the loop tells a latent batch from a pixel batch by its keys."""
    ds = DreamBoothDataset(_config(folders, flip_aug=True, random_crop=True, color_aug=True), tokenizer)
    batch = collate([ds[i] for i in range(3)])
    assert set(batch) == {"pixel_values", "input_ids", "is_reg", "captions"}
    assert batch["pixel_values"].shape == (3, 3, RES, RES)
