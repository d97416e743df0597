"""The training dataset against bad pictures: the preflight check, bounded memory for extreme pictures,
one-line errors from DataLoader workers; and its random_crop / color_aug augmentations."""

from __future__ import annotations

import colorsys
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from data.errors import DatasetError
from data.images import (
    apply_gamma,
    centre_window,
    color_augment,
    cover_size,
    random_window,
    resize_center_crop,
    resize_window,
    shift_hue,
)
from inference.models.tokenizer import build_tokenizer
from train.config import DatasetConfig
from train.dataset import DreamBoothDataset, SampleError, collate
from train.errors import ConfigError
from train.preflight import check_pictures

from .test_cli import REPO, run_train

RES = 16


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Random pixels of (w, h): every pixel differs, so any shift of a crop is visible."""
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    )


def _smooth(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth picture of (w, h) (noise upscaled), closer to a photograph than noise."""
    return _noise((max(2, size[0] // 8), max(2, size[1] // 8)), seed).resize(size, Image.Resampling.BICUBIC)


def _save(image: Image.Image, path: Path, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _dataset(train: Path, tokenizer: Any, **overrides: Any) -> DreamBoothDataset:
    values = {"train_dir": str(train), "resolution": RES} | overrides
    return DreamBoothDataset(DatasetConfig(**values), tokenizer=tokenizer, seed=5)


# --- 1. the preflight check -------------------------------------------------------------------------


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    """`2_sls` with a good PNG, a truncated PNG, a truncated JPEG, a good JPEG; headers all intact."""
    concept = tmp_path / "train" / "2_sls"
    _save(_smooth((64, 48), 0), concept / "a_good.png")
    _truncate(_save(_smooth((64, 48), 1), concept / "b_cut.png"))
    _truncate(_save(_smooth((640, 480), 2), concept / "c_cut.jpg", quality=90))
    _save(_smooth((64, 48), 3), concept / "d_good.jpg")
    return tmp_path / "train"


def test_truncated_pictures_are_named_before_training(broken_folder: Path, tokenizer: Any) -> None:
    ds = _dataset(broken_folder, tokenizer)  # reads headers only: the truncation is not seen yet
    first = broken_folder / "2_sls" / "b_cut.png"
    with Image.open(first) as opened:
        assert opened.size == (64, 48)  # a header-only check would pass it
    with pytest.raises(DatasetError) as info:
        ds.check_pictures(progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{first.absolute()} is truncated")
    assert "copy it again" in message and message.endswith("(and 1 more, listed above)")


def test_truncation_is_caught_even_when_a_library_allowed_truncated_files(broken_folder: Path) -> None:
    cut_jpeg = broken_folder / "2_sls" / "c_cut.jpg"  # decoded at 1/8 scale: still every byte is read
    old, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
    try:
        with pytest.raises(DatasetError, match="c_cut.jpg is truncated"):
            check_pictures([cut_jpeg], 8.0, progress=False)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is put back
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def test_extreme_aspect_ratios_are_refused_by_name(tmp_path: Path, tokenizer: Any) -> None:
    concept = tmp_path / "train" / "1_sls"
    _save(_smooth((64, 64), 0), concept / "square.png")
    strip = _save(_smooth((400, 20), 1), concept / "strip.png")
    _save(_smooth((64, 8), 2), concept / "exactly_eight.png")  # 8:1 is allowed at the default 8
    with pytest.raises(DatasetError) as info:
        _dataset(tmp_path / "train", tokenizer).check_pictures(progress=False)
    message = str(info.value)
    assert message.startswith(f"{strip.absolute()} is 400×20 px") and "20.0 times" in message
    assert "dataset.max_aspect_ratio=8" in message and "(and" not in message
    _dataset(tmp_path / "train", tokenizer, max_aspect_ratio=20.0).check_pictures(progress=False)


def test_a_healthy_folder_passes_and_nothing_is_written(tmp_path: Path, tokenizer: Any) -> None:
    concept = tmp_path / "train" / "3_sls"
    for i in range(4):
        _save(_smooth((48 + 8 * i, 40), i), concept / f"{i}.jpg", quality=85)
    before = {p: p.stat().st_mtime_ns for p in concept.iterdir()}
    _dataset(tmp_path / "train", tokenizer).check_pictures(progress=False)
    assert {p: p.stat().st_mtime_ns for p in concept.iterdir()} == before


def test_cli_names_a_truncated_picture_in_one_line(broken_folder: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = ["model=tiny", "dataset=folders", f"dataset.train_dir={broken_folder}", "logger=none"]
    overrides += ["eval.enabled=false", "training.max_train_steps=2", "dataset.num_workers=1"]
    result = run_train(run_dir, *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b_cut.png is truncated" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "c_cut.jpg is truncated" in result.stdout  # the other one
    assert not list(run_dir.glob("*.safetensors"))


# --- 4. errors from DataLoader workers ----------------------------------------------------------------


def test_a_worker_error_reaches_the_main_process_as_the_same_line(tmp_path: Path, tokenizer: Any) -> None:
    concept = tmp_path / "train" / "1_sls"
    picture = _save(_smooth((32, 32), 0), concept / "a.png")
    ds = _dataset(tmp_path / "train", tokenizer)
    _truncate(picture)  # broken after the dataset was built, e.g. by a sync tool
    with pytest.raises(DatasetError) as direct:
        ds[0]
    with pytest.raises(DatasetError) as through_worker:
        next(iter(DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate)))
    message = str(through_worker.value)
    assert isinstance(through_worker.value, SampleError)
    assert "\n" not in message and message == str(direct.value)
    assert message.startswith(f"{picture} cannot be read as an image") and "Traceback" not in message


# --- 2. memory: the crop is chosen before the scale ---------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target"),
    [
        ((60, 40), (16, 16)),
        ((40, 60), (16, 16)),
        ((200, 100), (64, 64)),
        ((33, 70), (16, 8)),
        ((64, 64), (16, 16)),
    ],
)
def test_normal_pictures_scale_exactly_as_before(size: tuple[int, int], target: tuple[int, int]) -> None:
    image = _noise(size, 0)
    resized = cover_size(size, target)
    before = image.resize(resized, Image.Resampling.LANCZOS).crop(centre_window(resized, target))
    assert np.array_equal(np.asarray(resize_center_crop(image, *target)), np.asarray(before))


@pytest.mark.parametrize(
    ("size", "target"),
    # Extreme shapes, one per pass order: upscale both sides, shrink the height only (vertical pass
    # first in Pillow 13), shrink both (either order), shrink the width only.
    [
        ((600, 6), (32, 32)),
        ((6, 600), (32, 32)),
        ((67, 700), (64, 8)),
        ((700, 300), (8, 64)),
        ((900, 40), (16, 16)),
    ],
)
def test_extreme_pictures_scale_only_the_window_and_match(
    size: tuple[int, int], target: tuple[int, int]
) -> None:
    resized = cover_size(size, target)
    assert resized[0] * resized[1] > 4 * target[0] * target[1]  # past the limit: only the window is scaled
    for picture in (_noise(size, 1), _smooth(size, 2)):
        for window in (centre_window(resized, target), random_window(resized, target, 0.9, 0.1)):
            whole = np.asarray(picture.resize(resized, Image.Resampling.LANCZOS).crop(window), dtype=int)
            only = np.asarray(resize_window(picture, resized, window), dtype=int)
            assert only.shape == whole.shape and np.abs(only - whole).max() <= 2


def test_a_window_of_an_unscaled_axis_is_a_plain_cut() -> None:
    picture = _noise((40, 100), 4)
    window = (10, 200, 30, 220)  # the width stays 40, the height is scaled 4×: only the rows are resampled
    whole = np.asarray(picture.resize((40, 400), Image.Resampling.LANCZOS).crop(window), dtype=int)
    only = np.asarray(resize_window(picture, (40, 400), window), dtype=int)
    assert np.abs(only - whole).max() <= 2


_PEAK_SCRIPT = """
import json, resource, sys
import numpy as np
from PIL import Image
from data.images import resize_center_crop
from train.config import DatasetConfig
from train.dataset import DreamBoothDataset
def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
strip = Image.fromarray(np.full((2, 4000, 3), 128, dtype=np.uint8))
config = DatasetConfig(train_dir=sys.argv[1], resolution=512, enable_bucket=True)
ds = DreamBoothDataset(config)
before = peak_mib()
square = resize_center_crop(strip, 256, 256)  # the whole scale would be 512000 x 256 px (500 MiB)
bucket = ds.pixels(ds.records[0].path)  # 4000x2 in bucket (1024, 256): also a 512000 x 256 px scale
print(json.dumps({"grew_mib": peak_mib() - before, "square": square.size, "bucket": bucket.shape}))
"""


def test_an_extreme_picture_never_allocates_its_whole_scale(tmp_path: Path) -> None:
    _save(Image.new("RGB", (4000, 2), (10, 200, 30)), tmp_path / "train" / "1_sls" / "strip.png")
    command = [sys.executable, "-c", _PEAK_SCRIPT, str(tmp_path / "train")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["square"] == [256, 256] and found["bucket"] == [256, 1024, 3]
    assert found["grew_mib"] < 40, found  # scaling the whole strip first took over 500 MiB


# --- 3. random_crop and color_aug ---------------------------------------------------------------------


@pytest.fixture
def wide_folder(tmp_path: Path) -> Path:
    """One 2:1 noise picture × 40 repeats: its R × R crop can slide R pixels along the width."""
    _save(_noise((64, 32), 7), tmp_path / "train" / "40_sls" / "wide.png")
    return tmp_path / "train"


def _offsets(ds: DreamBoothDataset, scaled: np.ndarray, width: int) -> list[int]:
    """The left offset of each sample's crop inside the scaled picture (asserts that it is one of them)."""
    found = []
    for i in range(len(ds)):
        pixels = ((ds[i]["pixel_values"].permute(1, 2, 0) + 1.0) * 127.5).round().numpy().astype(np.uint8)
        matches = [
            o for o in range(scaled.shape[1] - width + 1) if np.array_equal(scaled[:, o : o + width], pixels)
        ]
        assert len(matches) == 1
        found += matches
    return found


def test_random_crop_slides_the_window_and_keeps_the_other_draws(wide_folder: Path, tokenizer: Any) -> None:
    picture = Image.open(next(wide_folder.rglob("*.png"))).convert("RGB")
    scaled = np.asarray(picture.resize((32, 16), Image.Resampling.LANCZOS))
    options = {"flip_aug": False, "shuffle_caption": True, "caption_dropout_rate": 0.3}
    plain, crops = (
        _dataset(wide_folder, tokenizer, **options),
        _dataset(wide_folder, tokenizer, random_crop=True, **options),
    )
    assert set(_offsets(plain, scaled, RES)) == {8}  # the centre, as before
    offsets = _offsets(crops, scaled, RES)
    assert len(set(offsets)) >= 8 and min(offsets) >= 0 and max(offsets) <= 16
    assert [plain[i]["caption"] for i in range(len(plain))] == [
        crops[i]["caption"] for i in range(len(crops))
    ]
    again = _dataset(wide_folder, tokenizer, random_crop=True, **options)
    assert _offsets(again, scaled, RES) == offsets  # a pure function of (seed, epoch, index)
    again.set_epoch(1)
    assert _offsets(again, scaled, RES) != offsets
    with pytest.raises(ConfigError, match="random_crop"):
        crops.crop_plan(crops.records[0].path)


def test_random_crop_in_buckets(tmp_path: Path, tokenizer: Any) -> None:
    _save(_noise((100, 40), 3), tmp_path / "train" / "12_sls" / "wide.png")
    buckets = {"enable_bucket": True, "resolution": 64, "min_bucket_reso": 32, "max_bucket_reso": 128}
    buckets["bucket_reso_steps"] = 32
    ds = _dataset(tmp_path / "train", tokenizer, random_crop=True, **buckets)
    width, height = ds.sample_buckets()[0]  # 96 × 32: the 100 × 40 picture scales to 96 × 38
    shapes = {tuple(ds[i]["pixel_values"].shape) for i in range(len(ds))}
    distinct = {ds[i]["pixel_values"].numpy().tobytes() for i in range(len(ds))}
    assert shapes == {(3, height, width)} and len(distinct) >= 4


def test_shift_hue_and_gamma_match_their_definitions() -> None:
    colours = np.array(
        [[[255, 0, 0], [10, 200, 30], [12, 34, 250], [128, 128, 128], [0, 0, 0]]], dtype=np.uint8
    )
    turned = shift_hue(colours, 8.0)
    for rgb, out in zip(colours[0], turned[0], strict=True):
        h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0))
        expected = np.array(colorsys.hsv_to_rgb((h + 8 / 360) % 1.0, s, v)) * 255
        assert np.abs(out - expected).max() <= 0.51
    assert turned[0, 0].tolist() == [255, 34, 0]
    noise = np.asarray(_noise((32, 32), 0))
    assert np.array_equal(shift_hue(noise, 0.0), noise) and np.array_equal(shift_hue(noise, 360.0), noise)
    assert apply_gamma(np.array([0, 128, 255], dtype=np.uint8), 1.05).tolist() == [0, 124, 255]
    assert np.array_equal(apply_gamma(noise, 1.0), noise)
    assert color_augment(noise, (0.34, 0.0, 0.0)) is noise  # 2 of 3 samples are left alone
    assert np.array_equal(color_augment(noise, (0.1, 0.2, 1.0)), shift_hue(noise, 8.0))
    assert np.array_equal(color_augment(noise, (0.1, 0.7, 0.0)), apply_gamma(noise, 0.95))


def test_color_aug_changes_about_a_third_of_the_samples(wide_folder: Path, tokenizer: Any) -> None:
    plain = _dataset(wide_folder, tokenizer, flip_aug=True)
    colour = _dataset(wide_folder, tokenizer, flip_aug=True, color_aug=True)
    changed = [
        not torch.equal(plain[i]["pixel_values"], colour[i]["pixel_values"]) for i in range(len(plain))
    ]
    assert 0.15 <= sum(changed) / len(changed) <= 0.55
    same = _dataset(wide_folder, tokenizer, flip_aug=True, color_aug=True)
    assert all(torch.equal(colour[i]["pixel_values"], same[i]["pixel_values"]) for i in range(len(colour)))
    # Colour moves no pixel, and the flip draw is the same: each changed sample still lines up with its plain one.
    for i in (i for i, c in enumerate(changed) if c):
        a, b = plain[i]["pixel_values"].flatten(), colour[i]["pixel_values"]
        assert torch.corrcoef(torch.stack([a, b.flatten()]))[0, 1] > 0.9
        assert torch.corrcoef(torch.stack([a, b.flip(-1).flatten()]))[0, 1] < 0.5


# --- 5. the latent / text cache hooks -----------------------------------------------------------------


def _window_error(ds: DreamBoothDataset, path: Path, shift: tuple[int, int]) -> float:
    """Mean difference between pixels(path) and its crop_plan box moved by `shift` (source px), scaled."""
    (w, h), (left, top, right, bottom) = ds.crop_plan(path)
    dx, dy = shift
    cut = Image.open(path).convert("RGB").crop((left + dx, top + dy, right + dx, bottom + dy))
    return float(np.abs(ds.pixels(path).astype(int) - np.asarray(cut.resize((w, h)), dtype=int)).mean())


def test_crop_plan_is_the_centre_crop_in_source_pixels(tmp_path: Path, tokenizer: Any) -> None:
    _save(_smooth((64, 32), 0), tmp_path / "train" / "1_sls" / "wide.png")
    _save(_smooth((30, 90), 1), tmp_path / "train" / "1_sls" / "tall.png")
    ds = _dataset(tmp_path / "train", tokenizer)
    tall, wide = sorted(ds.unique_pictures())
    assert ds.crop_plan(wide) == ((16, 16), (16, 0, 48, 32))  # 64 × 32 scaled to 32 × 16: columns 8–24
    assert ds.crop_plan(tall) == ((16, 16), (0, 30, 30, 60))  # 30 × 90 scaled to 16 × 48: rows 16–32
    for path, (dx, dy) in ((wide, (4, 0)), (tall, (0, 4))):
        assert ds.pixels(path).shape == (16, 16, 3)
        neighbours = min(_window_error(ds, path, (dx, dy)), _window_error(ds, path, (-dx, -dy)))
        assert _window_error(ds, path, (0, 0)) < 0.5 * neighbours  # this window, not one beside it


class _FakeLatents:
    """A latent lookup that records its calls and answers with tensors that encode (picture, flipped)."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.calls = names, []

    def __call__(self, path: Path, flipped: bool) -> dict[str, torch.Tensor]:
        self.calls.append((path.name, flipped))
        code = float(self.names.index(path.name)) + (0.5 if flipped else 0.0)
        return {"latent_mean": torch.full((4, 2, 2), code), "latent_std": torch.full((4, 2, 2), -code)}


def test_a_latent_cache_replaces_the_pixels_with_the_same_flip_draws(tmp_path: Path, tokenizer: Any) -> None:
    concept = tmp_path / "train" / "5_sls"
    pictures = [_save(_noise((16, 16), i), concept / f"{i}.png") for i in range(2)]
    ds = _dataset(tmp_path / "train", tokenizer, flip_aug=True)
    unflipped = _dataset(tmp_path / "train", tokenizer)
    flips = [
        torch.equal(ds[i]["pixel_values"], unflipped[i]["pixel_values"].flip(-1)) for i in range(len(ds))
    ]
    lookup = _FakeLatents([p.name for p in pictures])
    ds.attach_latent_cache(lookup)
    for path in pictures:
        path.unlink()  # nothing is decoded any more
    items = [ds[i] for i in range(len(ds))]
    assert all("pixel_values" not in item for item in items)
    assert [flipped for _, flipped in lookup.calls] == flips and any(flips) and not all(flips)
    batch = collate(items[:4])
    assert batch["latent_mean"].shape == (4, 4, 2, 2) and batch["latent_std"].shape == (4, 4, 2, 2)
    assert batch["input_ids"].shape == (4, 77) and "pixel_values" not in batch


def test_a_text_cache_adds_hidden_states_and_keeps_the_ids(tmp_path: Path, tokenizer: Any) -> None:
    concept = tmp_path / "train" / "2_sls"
    for i in range(2):
        _save(_noise((16, 16), i), concept / f"{i}.png")
        (concept / f"{i}.txt").write_text(f"sls, look {i}", encoding="utf-8")
    ds = _dataset(tmp_path / "train", tokenizer)
    assert ds.unique_captions() == ["sls, look 0", "sls, look 1"]
    ds.attach_text_cache(lambda caption: {"encoder_hidden_states": torch.full((77, 8), float(caption[-1]))})
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["encoder_hidden_states"].shape == (4, 77, 8)
    assert batch["encoder_hidden_states"][:, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert batch["pixel_values"].shape == (4, 3, RES, RES) and batch["input_ids"].shape == (4, 77)


@pytest.mark.parametrize(
    ("options", "attach"),
    [
        ({"random_crop": True}, "latent"),
        ({"color_aug": True}, "latent"),
        ({"shuffle_caption": True}, "text"),
        ({"caption_dropout_rate": 0.1}, "text"),
    ],
)
def test_caches_refuse_what_would_change_every_epoch(tmp_path: Path, tokenizer: Any, options, attach) -> None:
    _save(_noise((16, 16), 0), tmp_path / "train" / "1_sls" / "a.png")
    ds = _dataset(tmp_path / "train", tokenizer, **options)
    with pytest.raises(ConfigError, match=next(iter(options))):
        if attach == "latent":
            ds.attach_latent_cache(_FakeLatents(["a.png"]))
        else:
            ds.attach_text_cache(lambda caption: {"encoder_hidden_states": torch.zeros(77, 8)})


def test_unique_pictures_lists_train_and_reg_once(tmp_path: Path, tokenizer: Any) -> None:
    for folder, count in (("train/3_sls", 2), ("reg/1_person", 3)):
        for i in range(count):
            _save(_noise((16, 16), i), tmp_path / folder / f"{i}.png")
    ds = _dataset(tmp_path / "train", tokenizer, reg_dir=str(tmp_path / "reg"))
    pictures = ds.unique_pictures()
    assert len(ds) == 6 + 6 and len(pictures) == len(set(pictures)) == 5
    assert [p.parent.name for p in pictures] == ["3_sls"] * 2 + ["1_person"] * 3
    assert ds.unique_captions() == ["sls", "person"]


def test_sample_error_text_survives_torchs_rewrapping() -> None:
    wrapped = (
        "Caught SampleError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ntrain.dataset.SampleError: /data/a.png cannot be read: fix it\n'
    )
    assert str(SampleError(wrapped)) == "/data/a.png cannot be read: fix it"
    assert str(SampleError("/data/a.png cannot be read: fix it")) == "/data/a.png cannot be read: fix it"


def test_a_very_large_picture_is_named_once_without_pillows_warning(tmp_path, monkeypatch, caplog, recwarn):
    """Above Pillow's decompression-bomb warning size a picture still trains; the check names it in one line."""
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 8000 px > 5000: Pillow warns, < 2x: no error
    with caplog.at_level("WARNING", logger="train.preflight"):
        check_pictures([path], max_aspect_ratio=4.0, progress=False)
    assert f"{path} is very large (100×80 px)" in caplog.text
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
