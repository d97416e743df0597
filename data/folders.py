"""kohya's dataset folder convention: `train_dir/<repeats>_<token> <class>/image.png`, read and write."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from data.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# pictures a camera, phone or editor writes that a training folder does not read (kohya neither)
OTHER_PICTURE_EXTENSIONS = (".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".jxl", ".psd")
_EXT_LIST = " ".join(IMAGE_EXTENSIONS)
_NAME_RE = re.compile(r"^(-?\d+)_(.*)$")
MAX_REPEATS = 10_000  # per folder; kohya's guides use 10 to 100
# Names like `10 sls 1girl` or `10-sls` are the near-misses users make; keep their number in the suggestion.
_NEAR_MISS_RE = re.compile(r"^(\d+)[\s\-.]+(.+)$")


@dataclass
class Subset:
    """One `<repeats>_<class tokens>` folder: its images are each seen `repeats` times per epoch."""

    folder: Path
    repeats: int
    class_tokens: str
    images: list[Path] = field(default_factory=list)
    is_reg: bool = False

    @property
    def name(self) -> str:
        """The folder's own name, e.g. `10_sls 1girl` (the key kohya uses in LoRA metadata)."""
        return self.folder.name


def is_image_file(path: Path) -> bool:
    """True for a visible file whose extension (any case) is one we train on."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def suggest_folder_name(name: str, repeats: int = 10) -> str:
    """A valid folder name close to `name`: `sls 1girl` → `10_sls 1girl`, `10 sls` → `10_sls`."""
    near = _NEAR_MISS_RE.match(name)
    if near:
        return f"{near.group(1)}_{near.group(2)}"
    return f"{repeats}_{name}"


def parse_folder_name(name: str) -> tuple[int, str]:
    """Split `10_sls 1girl` into (10, "sls 1girl"); raise DatasetError for names without a `<number>_` prefix."""
    match = _NAME_RE.match(name)
    if not match:
        raise DatasetError(
            f"folder `{name}` does not start with `<repeats>_` (how many times each image is seen per epoch): "
            f"rename it to `{suggest_folder_name(name)}`"
        )
    repeats, tokens = int(match.group(1)), match.group(2).strip()
    if repeats < 1:
        raise DatasetError(
            f"folder `{name}` has {repeats} repeats; each image must be seen at least once per epoch: "
            f"rename it to `1_{tokens}` (or a larger number)"
        )
    if repeats > MAX_REPEATS:  # an epoch's order lists every repeat: a typo's billion ran out of memory
        raise DatasetError(
            f"folder `{name}` repeats each image {repeats} times, more than {MAX_REPEATS}: kohya's usual is 10 "
            f"to 100; rename it (e.g. `10_{tokens}`) and set training.max_train_epochs for a longer run"
        )
    return repeats, tokens


def _role(is_reg: bool) -> tuple[str, str]:
    """The config key and an example sub-folder name, for messages."""
    return ("dataset.reg_dir", "1_1girl") if is_reg else ("dataset.train_dir", "10_sls 1girl")


def _check_root(path: Path, is_reg: bool) -> None:
    key, example = _role(is_reg)
    if not path.exists():
        raise DatasetError(
            f"{key} {path} does not exist: check the path, or create it with sub-folders like `{example}`"
        )
    if not path.is_dir():
        raise DatasetError(
            f"{key} {path} is a file, not a folder: point {key} at the folder that holds "
            f"sub-folders like `{example}`"
        )


def _raise_images_in_root(path: Path, images: list[Path], is_reg: bool) -> None:
    key, example = _role(is_reg)
    pattern = "1_<class>" if is_reg else "10_<token> <class>"
    generic = "<repeats>_<class>" if is_reg else "<repeats>_<token> <class>"
    raise DatasetError(
        f"{key} {path} holds {len(images)} images directly (e.g. {images[0].name}), but it must be the "
        f"parent of `{generic}` folders: move the images into {path / pattern}/ "
        f"(for example {path / example}/) and keep {key}={path}"
    )


def _raise_bad_names(path: Path, bad: list[str], is_reg: bool) -> None:
    key, _ = _role(is_reg)
    renames = "; ".join(f"`{name}` → `{suggest_folder_name(name, 1 if is_reg else 10)}`" for name in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    raise DatasetError(
        f"{key} {path}: sub-folder names must start with `<repeats>_` (how many times each image is seen "
        f"per epoch); rename {renames}{more}"
    )


def _raise_no_images(folder: Path, entries: list[Path]) -> None:
    subdirs = sorted(p.name for p in entries if p.is_dir())
    others = sorted({p.suffix.lower() or p.name for p in entries if p.is_file()})
    if subdirs:
        listed = ", ".join(f"`{name}`" for name in subdirs[:3])
        hint = (
            f"it has sub-folders ({listed}), but images must sit directly inside it: "
            f"move them up into {folder}/"
        )
    elif others:
        hint = f"it only has other files ({', '.join(others[:5])}): add images, or remove the folder"
    else:
        hint = "it is empty: add images, or remove the folder"
    raise DatasetError(f"{folder} holds no images (looked for {_EXT_LIST}, directly inside); {hint}")


def _warn_skipped(folder: Path, entries: list[Path]) -> None:
    """Say which would-be pictures of a concept folder are left out: broken links, and other formats."""
    broken = [p.name for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_file()]
    other = [p.name for p in entries if p.suffix.lower() in OTHER_PICTURE_EXTENSIONS]
    if broken:
        log.warning(
            "%s: %d picture names are not readable files (broken links, or folders), skipped: %s",
            folder, len(broken), ", ".join(broken[:5]) + (", ..." if len(broken) > 5 else ""),
        )  # fmt: skip
    if other:
        log.warning(
            "%s: %d pictures in formats that are not trained on (%s), skipped: %s; convert them to PNG or JPEG "
            "(python -m data does)",
            folder, len(other), _EXT_LIST, ", ".join(other[:5]) + (", ..." if len(other) > 5 else ""),
        )  # fmt: skip


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden entries (.git, .DS_Store, macOS `._x.png` forks, our own temp files) are never data.
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as error:
        raise DatasetError(f"{folder} cannot be listed ({error.strerror}): check its permissions") from None


def _warn_caption_extensions(subset: Subset, caption_extensions: list[str]) -> None:
    """Warn when a folder has no captions with the configured extensions but has some with another one."""
    wanted = [_dotted(ext) for ext in caption_extensions]
    if any(img.with_name(img.stem + ext).is_file() for img in subset.images for ext in wanted):
        return
    for ext in (".txt", ".caption", ".tags"):
        if ext in wanted:
            continue
        found = sum(img.with_name(img.stem + ext).is_file() for img in subset.images)
        if found:
            log.warning(
                "%s: no image has a caption with %s, but %d %s files are there; they are ignored, and the "
                "folder trains on its class tokens: set dataset.caption_extensions=[%s] to use them",
                subset.folder,
                "/".join(wanted),
                found,
                ext,
                ext,
            )
            return


def _dotted(ext: str) -> str:
    return ext if ext.startswith(".") else "." + ext


def scan_dataset_dir(path: str | Path, is_reg: bool, caption_extensions: list[str]) -> list[Subset]:
    """Read the `<repeats>_<class tokens>` sub-folders of `path`, sorted by name; DatasetError on layout mistakes."""
    root = Path(path).expanduser()
    _check_root(root, is_reg)
    entries = _visible_entries(root)
    subdirs = [p for p in entries if p.is_dir()]
    loose_images = [p for p in entries if is_image_file(p)]
    named = [p for p in subdirs if _NAME_RE.match(p.name)]
    if loose_images and not named:
        _raise_images_in_root(root, loose_images, is_reg)
    if not subdirs:
        key, example = _role(is_reg)
        state = "is empty" if not entries else f"has no sub-folders ({len(entries)} files only)"
        raise DatasetError(
            f"{key} {root} {state}: put the images in a sub-folder named "
            f"`<repeats>_<token> <class>`, e.g. {root / example}/"
        )
    bad = [p.name for p in subdirs if not _NAME_RE.match(p.name)]
    if bad:
        _raise_bad_names(root, bad, is_reg)
    if loose_images:
        log.warning(
            "%s: %d images directly in this folder are ignored; only images inside `<repeats>_...` "
            "sub-folders are used",
            root,
            len(loose_images),
        )
    subsets = []
    for folder in subdirs:
        repeats, tokens = _parse_in(root, folder.name)
        folder_entries = _visible_entries(folder)
        images = [p for p in folder_entries if is_image_file(p)]
        if not images:
            _raise_no_images(folder, folder_entries)
        _warn_skipped(folder, folder_entries)
        subset = Subset(folder=folder, repeats=repeats, class_tokens=tokens, images=images, is_reg=is_reg)
        _warn_caption_extensions(subset, caption_extensions)
        subsets.append(subset)
    return subsets


def _parse_in(root: Path, name: str) -> tuple[int, str]:
    """parse_folder_name, with the full path in the message so the user finds the folder."""
    try:
        return parse_folder_name(name)
    except DatasetError as error:
        raise DatasetError(f"{root}: {error}") from None


def dataset_folder_name(repeats: int, token: str, class_word: str) -> str:
    """The sub-folder name for `repeats`, trigger `token` and `class_word`: `10_sls 1girl`; no token: `1_1girl`."""
    if repeats < 1:
        raise DatasetError(f"repeats={repeats} for `{token} {class_word}`: use 1 or more")
    tokens = " ".join(part for part in (token.strip(), class_word.strip()) if part)
    if any(sep in tokens for sep in ("/", "\\")) or tokens.startswith("."):
        raise DatasetError(
            f"`{tokens}` cannot be part of a folder name (no slashes, no leading dot): choose another token"
        )
    return f"{repeats}_{tokens}"


def make_subset_folder(root: str | Path, repeats: int, token: str, class_word: str) -> Path:
    """Create (if needed) and return `root/<repeats>_<token> <class_word>`."""
    folder = Path(root) / dataset_folder_name(repeats, token, class_word)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
