"""kohya's `<repeats>_<class tokens>` folder convention: parsing, scanning, and the messages for each mistake."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from data.errors import DatasetError
from data.folders import (
    dataset_folder_name,
    make_subset_folder,
    parse_folder_name,
    scan_dataset_dir,
    suggest_folder_name,
)

EXTS = [".txt", ".caption"]


def _png(path: Path, color: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "repeats", "tokens"),
    [
        ("10_sls 1girl", 10, "sls 1girl"),
        ("5_my_cat toy", 5, "my_cat toy"),
        ("1_1girl", 1, "1girl"),
        ("007_x", 7, "x"),
        ("3_", 3, ""),
        ("20_a_b_c", 20, "a_b_c"),
    ],
)
def test_parse_folder_name(name: str, repeats: int, tokens: str) -> None:
    assert parse_folder_name(name) == (repeats, tokens)


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("sls 1girl", "10_sls 1girl"),
        ("10 sls 1girl", "10_sls 1girl"),
        ("10-sls", "10_sls"),
        ("x_10", "10_x_10"),
    ],
)
def test_parse_folder_name_rejects_missing_prefix_with_a_fix(name: str, fix: str) -> None:
    with pytest.raises(DatasetError) as info:
        parse_folder_name(name)
    assert f"`{name}`" in str(info.value)
    assert f"`{fix}`" in str(info.value)
    assert suggest_folder_name(name) == fix


@pytest.mark.parametrize("name", ["0_sls", "-2_sls"])
def test_parse_folder_name_rejects_repeats_below_one(name: str) -> None:
    with pytest.raises(DatasetError, match="at least once") as info:
        parse_folder_name(name)
    assert name in str(info.value) and "`1_sls`" in str(info.value)


def test_scan_reads_subsets_sorted_and_ignores_hidden(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "c.JpEg", "d.webp", "e.bmp"]:
        _png(tmp_path / "10_sls 1girl" / name)
    (tmp_path / "10_sls 1girl" / "a.txt").write_text("sls 1girl, smile")
    (tmp_path / "10_sls 1girl" / "notes.md").write_text("not an image")
    (tmp_path / "10_sls 1girl" / "._a.jpg").write_bytes(b"macOS resource fork")
    _png(tmp_path / "2_other" / "x.png")
    _png(tmp_path / ".hidden" / "y.png")
    (tmp_path / ".DS_Store").write_bytes(b"")

    subsets = scan_dataset_dir(tmp_path, False, EXTS)

    assert [s.name for s in subsets] == ["10_sls 1girl", "2_other"]
    first = subsets[0]
    assert (first.repeats, first.class_tokens, first.is_reg) == (10, "sls 1girl", False)
    assert [p.name for p in first.images] == ["a.jpg", "b.PNG", "c.JpEg", "d.webp", "e.bmp"]
    assert first.folder == tmp_path / "10_sls 1girl"
    assert scan_dataset_dir(tmp_path, True, EXTS)[1].is_reg


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(missing, False, EXTS)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message and "10_sls 1girl" in message


def test_path_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "data.zip"
    file.write_bytes(b"zip")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(file, False, EXTS)
    assert str(file) in str(info.value) and "not a folder" in str(info.value)


def test_images_directly_in_the_folder_is_the_classic_mistake(tmp_path: Path) -> None:
    root = tmp_path / "my_pics"
    _png(root / "img001.png")
    _png(root / "img002.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(root, False, EXTS)
    message = str(info.value)
    assert str(root) in message and "2 images directly" in message
    assert f"{root / '10_<token> <class>'}/" in message and "10_sls 1girl" in message
    assert "\n" not in message


def test_reg_images_directly_in_the_folder(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, True, EXTS)
    message = str(info.value)
    assert message.startswith(f"dataset.reg_dir {tmp_path} ") and "`<repeats>_<class>`" in message
    assert f"{tmp_path / '1_<class>'}/" in message and f"{tmp_path / '1_1girl'}/" in message


def test_images_in_folder_with_valid_subfolders_only_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _png(tmp_path / "stray.png")
    _png(tmp_path / "3_cat" / "a.png")
    with caplog.at_level(logging.WARNING):
        subsets = scan_dataset_dir(tmp_path, False, EXTS)
    assert [s.name for s in subsets] == ["3_cat"]
    assert "1 images directly in this folder are ignored" in caplog.text


def test_broken_links_and_other_picture_formats_are_named_when_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "3_cat"
    _png(folder / "a.png")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "anim.gif").write_bytes(b"GIF89a")
    with caplog.at_level(logging.WARNING):
        (subset,) = scan_dataset_dir(tmp_path, False, EXTS)
    assert [p.name for p in subset.images] == ["a.png"]
    assert (
        f"{folder}: 2 picture names are not readable files (broken links, or folders), skipped: gone.png, "
        "loop.jpg" in caplog.text
    )
    assert (
        "1 pictures in formats that are not trained on" in caplog.text and "skipped: anim.gif;" in caplog.text
    )


def test_subfolder_without_number_prefix(tmp_path: Path) -> None:
    _png(tmp_path / "10_good" / "a.png")
    _png(tmp_path / "sls 1girl" / "a.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, False, EXTS)
    message = str(info.value)
    assert str(tmp_path) in message and "`sls 1girl` → `10_sls 1girl`" in message


def test_reg_subfolder_suggestion_uses_one_repeat(tmp_path: Path) -> None:
    _png(tmp_path / "1girl" / "a.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, True, EXTS)
    assert "dataset.reg_dir" in str(info.value) and "`1girl` → `1_1girl`" in str(info.value)


def test_subfolder_with_zero_repeats(tmp_path: Path) -> None:
    _png(tmp_path / "0_sls toy" / "a.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, False, EXTS)
    message = str(info.value)
    assert str(tmp_path) in message and "`0_sls toy`" in message and "`1_sls toy`" in message


def test_subfolder_without_images_mentions_nested_folders(tmp_path: Path) -> None:
    _png(tmp_path / "10_sls toy" / "raw" / "a.png")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, False, EXTS)
    message = str(info.value)
    assert str(tmp_path / "10_sls toy") in message and "holds no images" in message
    assert ".png" in message and ".webp" in message
    assert "`raw`" in message and "directly inside" in message


def test_subfolder_with_only_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "10_sls toy"
    folder.mkdir()
    (folder / "a.gif").write_bytes(b"GIF89a")
    (folder / "a.txt").write_text("caption")
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, False, EXTS)
    assert str(folder) in str(info.value) and ".gif" in str(info.value)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        scan_dataset_dir(tmp_path, False, EXTS)
    message = str(info.value)
    assert str(tmp_path) in message and "is empty" in message and f"{tmp_path / '10_sls 1girl'}/" in message


def test_folder_with_only_files_and_no_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match="has no sub-folders"):
        scan_dataset_dir(tmp_path, False, EXTS)


def test_caption_extension_mismatch_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "10_sls" / "a.png")
    (tmp_path / "10_sls" / "a.txt").write_text("sls, red")
    with caplog.at_level(logging.WARNING):
        scan_dataset_dir(tmp_path, False, [".caption"])
    assert "dataset.caption_extensions=[.txt]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        scan_dataset_dir(tmp_path, False, [".txt"])
    assert caplog.text == ""


def test_writer_side_round_trips(tmp_path: Path) -> None:
    assert dataset_folder_name(10, "sls", "1girl") == "10_sls 1girl"
    assert dataset_folder_name(1, "", "toy") == "1_toy"
    folder = make_subset_folder(tmp_path, 5, "my_cat", "toy")
    assert folder == tmp_path / "5_my_cat toy" and folder.is_dir()
    assert parse_folder_name(folder.name) == (5, "my_cat toy")
    assert make_subset_folder(tmp_path, 5, "my_cat", "toy") == folder  # idempotent


@pytest.mark.parametrize(("repeats", "token"), [(0, "sls"), (3, "a/b"), (3, ".x")])
def test_writer_side_rejects_bad_names(tmp_path: Path, repeats: int, token: str) -> None:
    with pytest.raises(DatasetError):
        dataset_folder_name(repeats, token, "toy")


def test_parse_folder_name_refuses_absurd_repeats() -> None:
    """A typo's 999999999 repeats listed a billion samples per epoch and the run was killed for memory."""
    assert parse_folder_name("10000_sls") == (10000, "sls")
    with pytest.raises(
        DatasetError, match=r"`999999999_sls` repeats each image 999999999 times, more than 10000"
    ):
        parse_folder_name("999999999_sls")
