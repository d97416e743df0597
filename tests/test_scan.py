"""The read-only source scan: a corpus of bad input is reported file by file, and the folder stays untouched."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import scan as scan_module
from data.dedupe import dhash, find_duplicates, hamming
from data.errors import DatasetError, LoraSmithError
from data.scan import ScanResult, SourceImage, load_source_image, scan_source
from data.tree_checksum import tree_checksum, tree_manifest

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RED = (255, 0, 0)


def picture(width: int = 128, height: int = 96, seed: int = 0) -> Image.Image:
    """A smooth, structured RGB picture (waves), so difference hashes are stable under re-encoding."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    phase = seed * 1.7
    red = 127 + 120 * np.sin(7 * x + phase) * np.cos(5 * y)
    green = 127 + 120 * np.cos(4 * x - 6 * y + phase)
    blue = 127 + 120 * np.sin(9 * y + 3 * x * phase)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def build_corpus(root: Path) -> None:
    """Every kind of good and bad input a user's picture folder can hold."""
    good = root / "good"
    good.mkdir(parents=True)
    (good / "clean.png").write_bytes(png_bytes(picture()))
    (good / "clean.txt").write_text("a photo of sks dog\nsecond line is ignored\n", encoding="utf-8")
    picture(seed=1).save(good / "no_caption.png")
    picture(seed=2).convert("CMYK").save(good / "cmyk.jpg", quality=95)
    ramp = (np.arange(70 * 80, dtype=np.uint32).reshape(70, 80) * 11).astype(np.uint16)
    Image.fromarray(ramp).save(good / "grey16.png")
    palette = Image.new("P", (80, 80), 0)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * (254 * 3))
    palette.paste(1, (40, 0, 80, 80))
    palette.save(good / "palette.png", transparency=0)
    Image.fromarray((np.indices((72, 72)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("1").save(
        good / "bilevel.png"
    )
    # Stored 120×80 with a red top-left corner; orientation 6 means "rotate 90° clockwise to view".
    stored = Image.new("RGB", (120, 80), (0, 0, 200))
    stored.paste(RED, (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(good / "rotated.jpg", exif=exif, quality=95)
    frames = [Image.new("RGB", (80, 80), color) for color in (RED, (0, 255, 0), (0, 0, 255))]
    frames[0].save(good / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    picture(seed=3).save(good / "latin1.png")
    (good / "latin1.txt").write_bytes("café, crème brûlée".encode("latin-1"))
    (good / "metadata.json").write_text("{}")  # not a picture, not a caption: ignored

    dups = root / "dups"
    dups.mkdir()
    shutil.copyfile(good / "clean.png", dups / "exact_copy.png")
    picture().save(dups / "reencoded.jpg", quality=90)

    bad = root / "junk"
    bad.mkdir()
    whole = png_bytes(picture(seed=4))
    (bad / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a picture\n")
    (bad / "random.webp").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    Image.new("RGB", (1, 1), RED).save(bad / "tiny.png")
    Image.new("L", (20000, 20), 128).save(bad / "wide.png")
    (bad / "lonely.txt").write_text("caption without a picture")
    (bad / "._clean.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    os.mkfifo(bad / "pipe.png")  # opening it would block forever
    (bad / "self.png").symlink_to("self.png")
    (bad / "gone.png").symlink_to("missing-target.png")
    (bad / "up").symlink_to("..")  # a folder link to its parent's parent: a loop back to the root
    (bad / "good_again").symlink_to("../good")  # a second way into a folder scanned under its own name
    if not IS_ROOT:
        locked = bad / "locked.png"
        picture(seed=5).save(locked)
        locked.chmod(0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, ScanResult, list[str], list[str]]:
    """The corpus root, its scan, and the tree manifest before and after the scan."""
    root = tmp_path_factory.mktemp("source")
    build_corpus(root)
    before = tree_manifest(root)
    result = scan_source(root)
    return root, result, before, tree_manifest(root)


def by_name(result: ScanResult) -> tuple[dict[str, SourceImage], dict[str, str]]:
    """Kept images and skip reasons, keyed by relative path."""
    images = {image.relative.as_posix(): image for image in result.images}
    skipped = {item.path.relative_to(result.root).as_posix(): item.reason for item in result.skipped}
    return images, skipped


def test_scan_leaves_the_tree_untouched(corpus):
    root, result, before, after = corpus
    assert after == before
    for image in result.images:
        load_source_image(image)
    assert tree_manifest(root) == before  # loading for later stages writes nothing either


CHANGES = {
    "same-size rewrite": lambda file: file.write_bytes(b"two"),
    "chmod": lambda file: file.chmod(0o600),
    "touch": lambda file: os.utime(file, ns=(0, file.stat().st_mtime_ns + 10**9)),
    "rename": lambda file: file.rename(file.with_name("b.png")),
    "new hidden temp file": lambda file: file.with_name(".a.png.tmp").write_bytes(b""),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_tree_checksum_sees_every_change_but_not_reading(tmp_path, change):
    folder = tmp_path / "sub"
    folder.mkdir()
    file = folder / "a.png"
    file.write_bytes(b"one")
    file.chmod(0o644)
    (tmp_path / "link").symlink_to("sub")
    (tmp_path / "loop").symlink_to(".")  # recorded, never followed
    original = tree_checksum(tmp_path)
    file.read_bytes()
    assert tree_checksum(tmp_path) == original
    times = {path: path.stat().st_mtime_ns for path in (folder, file)}
    CHANGES[change](file)
    if change != "touch":  # put mtimes back, so only the change itself can tell
        for path, mtime in times.items():
            if path.exists():
                os.utime(path, ns=(0, mtime))
    assert tree_checksum(tmp_path) != original


def test_good_pictures_are_kept_with_upright_sizes_and_file_modes(corpus):
    _, result, _, _ = corpus
    images, _ = by_name(result)
    expected = {
        "good/clean.png": ((128, 96), "RGB"),
        "good/no_caption.png": ((128, 96), "RGB"),
        "good/cmyk.jpg": ((128, 96), "CMYK"),
        "good/grey16.png": ((80, 70), "I;16"),
        "good/palette.png": ((80, 80), "P"),
        "good/bilevel.png": ((72, 72), "1"),
        "good/rotated.jpg": ((80, 120), "RGB"),
        "good/animated.gif": ((80, 80), "P"),
        "good/latin1.png": ((128, 96), "RGB"),
        "dups/exact_copy.png": ((128, 96), "RGB"),
        "dups/reencoded.jpg": ((128, 96), "RGB"),
    }
    assert {name: (image.size, image.mode) for name, image in images.items()} == expected
    assert [image.relative for image in result.images] == sorted(image.relative for image in result.images)
    for image in result.images:
        loaded = load_source_image(image)
        assert loaded.mode == "RGB" and loaded.size == image.size, image.relative


def test_every_bad_file_is_skipped_with_a_reason_that_names_the_problem(corpus):
    _, result, _, _ = corpus
    _, skipped = by_name(result)
    expected = {
        "junk/truncated.png": "truncated",
        "junk/empty.png": "0-byte",
        "junk/text.jpg": "not an image: the file holds text",
        "junk/random.webp": "not an image",
        "junk/tiny.png": "too small: 1×1 px",
        "junk/wide.png": "too small: 20000×20 px",
        "junk/._clean.png": "macOS metadata",
        "junk/pipe.png": "not a regular file",
        "junk/self.png": "symbolic link loop",
        "junk/gone.png": "broken symbolic link",
        "junk/up": "symbolic link loop",
        "junk/good_again": "link to good, inside the scanned folder",
    }
    if not IS_ROOT:
        expected["junk/locked.png"] = "Permission denied"
    assert set(skipped) == set(expected)
    for name, words in expected.items():
        assert words in skipped[name], (name, skipped[name])


def test_captions_orphans_and_notes(corpus):
    root, result, _, _ = corpus
    images, _ = by_name(result)
    assert images["good/clean.png"].caption == "a photo of sks dog"
    assert images["good/clean.png"].caption_path == root / "good" / "clean.txt"
    assert images["good/no_caption.png"].caption is None
    assert images["good/no_caption.png"].caption_path is None
    latin1 = images["good/latin1.png"]
    assert latin1.caption is None and latin1.caption_error.startswith("latin1.txt is not UTF-8 text")
    assert result.orphans == [root / "junk" / "lonely.txt"]
    assert any("3 frames" in note for note in images["good/animated.gif"].notes)
    assert any("transparent" in note for note in images["good/palette.png"].notes)
    assert not images["good/clean.png"].notes


def test_loaded_pixels_are_upright_composited_and_not_clipped(corpus):
    _, result, _, _ = corpus
    images, _ = by_name(result)
    rotated = load_source_image(images["good/rotated.jpg"])
    # 90° clockwise: the stored top-left corner is now the top-right one.
    assert _close(rotated.getpixel((80 - 15, 15)), RED)
    assert not _close(rotated.getpixel((15, 15)), RED)
    assert _close(load_source_image(images["good/animated.gif"]).getpixel((40, 40)), RED)
    palette = images["good/palette.png"]
    assert load_source_image(palette).getpixel((10, 10)) == (255, 255, 255)
    assert load_source_image(palette, background=(0, 0, 0)).getpixel((10, 10)) == (0, 0, 0)
    assert load_source_image(palette).getpixel((60, 10)) == (200, 30, 30)
    grey = load_source_image(images["good/grey16.png"]).convert("L")
    assert 0 < grey.getpixel((40, 35)) < 255  # scaled from 16 bits, not clipped to white


def _close(pixel, expected, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def test_exact_and_near_duplicates(corpus):
    _, result, _, _ = corpus
    root = result.root
    found = {
        (d.path.relative_to(root).as_posix(), d.kept.relative_to(root).as_posix(), d.kind)
        for d in find_duplicates(result.images)
    }
    # `good/clean.png` has a caption, so it is kept although `dups/` sorts first: its caption stays.
    assert found == {
        ("dups/exact_copy.png", "good/clean.png", "exact"),
        ("dups/reencoded.jpg", "good/clean.png", "near"),
    }


def fake_image(name: str, dhash_value: int, colour: int = 100, sha: str | None = None) -> SourceImage:
    """A scan entry with a chosen hash and a flat thumbnail of grey level `colour`."""
    return SourceImage(
        path=Path("/src") / name,
        relative=Path(name),
        sha256=sha or name,
        size=(64, 64),
        mode="RGB",
        format="PNG",
        dhash=dhash_value,
        thumbnail=bytes([colour]) * 192,
    )


def test_duplicates_join_the_nearest_kept_image_without_chains():
    a = fake_image("a.png", 0)
    b = fake_image("b.png", 0b111)  # 3 bits from a
    c = fake_image("c.png", 0b111111)  # 3 bits from b, 6 from a: kept, b is not a keeper
    d = fake_image("d.png", 0b111110)  # 1 bit from c, 5 from a
    e = fake_image("e.png", 0b111, sha="c.png")  # same bytes as c: c's group, whatever its hash
    dups = find_duplicates([e, d, c, b, a])
    assert [(x.path.name, x.kept.name, x.kind, x.distance) for x in dups] == [
        ("b.png", "a.png", "near", 3),
        ("d.png", "c.png", "near", 1),
        ("e.png", "c.png", "exact", 3),
    ]
    assert dups[2].reason == "same bytes as /src/c.png" and "3 of 64" in dups[0].reason


def test_flat_pictures_of_different_colours_are_not_near_duplicates():
    red, grey = Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), (128, 128, 128))
    assert dhash(red) == dhash(grey) == 0
    images = [fake_image("red.png", 0, colour=0), fake_image("grey.png", 0, colour=128)]
    assert find_duplicates(images) == []
    assert hamming(dhash(picture()), dhash(picture(seed=7))) > 4


def test_symlinks_out_of_the_root_are_followed_once_and_loops_end(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    picture().save(outside / "a.png")
    (outside / "back").symlink_to(root)  # root → ext → back → root
    (root / "ext").symlink_to(outside)
    (root / "ext_again").symlink_to(outside)
    (root / "file_link.png").symlink_to(outside / "a.png")
    before = tree_manifest(tmp_path)
    result = scan_source(root)
    assert tree_manifest(tmp_path) == before
    assert sorted(image.relative.as_posix() for image in result.images) == ["ext/a.png", "file_link.png"]
    _, skipped = by_name(result)
    assert skipped == {
        "ext/back": "symbolic link loop: it leads back to the scanned folder, which contains it; not followed",
        "ext_again": "same folder as ext, which is scanned already",
    }


def test_unreadable_file_is_skipped_even_where_permissions_are_not_enforced(tmp_path, monkeypatch):
    picture().save(tmp_path / "locked.png")
    real_open = open

    def denying_open(path, *args, **kwargs):
        if Path(path).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setitem(scan_module.__dict__, "open", denying_open)
    result = scan_source(tmp_path)
    assert result.images == []
    assert [(s.path.name, s.reason) for s in result.skipped] == [
        ("locked.png", "cannot be read (Permission denied): check its permissions")
    ]


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    picture().save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 128×96 is over twice the limit
    result = scan_source(tmp_path)
    assert result.images == [] and "decompression bomb" in result.skipped[0].reason
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)  # over the limit, under twice it: a warning
    (image,) = scan_source(tmp_path).images
    assert any("very large" in note for note in image.notes)


def test_load_refuses_a_file_changed_since_the_scan(tmp_path):
    picture().save(tmp_path / "a.png")
    (image,) = scan_source(tmp_path).images
    picture(seed=9).save(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="changed since the scan"):
        load_source_image(image)


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_source(tmp_path / "nope")
    with pytest.raises(LoraSmithError, match="three values 0–255"):
        scan_source(tmp_path, background=(255, 255, 255, 0))


def test_a_clean_folder_of_1000_pictures_scans_quickly(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(1000):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index:04d}.png", compress_level=1)
    start = time.perf_counter()
    result = scan_source(tmp_path)
    elapsed = time.perf_counter() - start
    duplicates = find_duplicates(result.images)
    print(f"scanned {len(result.images)} pictures in {elapsed:.2f} s ({len(result.images) / elapsed:.0f}/s)")
    assert len(result.images) == 1000 and not result.skipped and not duplicates
