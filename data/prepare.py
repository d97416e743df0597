"""The preparation stage: raw pictures → `out/train/N_trigger class/` (+ `out/reg/1_class/`), a manifest and a
report. The source is only read. Each picture is written atomically and then recorded in the manifest, so
a killed run resumes where it stopped and never leaves a half-written file."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from data.atomic import write_bytes_atomic
from data.dedupe import find_duplicates
from data.errors import DatasetError
from data.folders import dataset_folder_name
from data.framing import Framer
from data.images import write_captioned_picture
from data.manifest import Manifest
from data.prepare_config import PrepareConfig
from data.prepare_report import write_report
from data.regularization import prepare_regularization
from data.scan import Skipped, SourceImage, load_source_image, scan_source
from data.tags import TagRules, apply_rules, normalize_tag, split_tags, tag_frequencies


@dataclass
class PrepareResult:
    """What a run wrote and found; `report` holds everything that report.json records."""

    out: Path
    train_dir: Path
    written: int
    resumed: int
    seconds: float
    report: dict = field(default_factory=dict)


def _output_names(images: list[SourceImage]) -> dict[str, str]:
    """A stable, unique output stem per source picture: its relative path with `/` as `__`."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for image in images:
        stem = "__".join(Path(image.relative).with_suffix("").parts)
        if stem.casefold() in taken:  # `a.jpg` and `a.png`, or names differing in case only
            stem = f"{stem}-{image.sha256[:8]}"
        taken.add(stem.casefold())
        names[image.sha256] = stem
    return names


def _check_folders(source: Path, out: Path) -> None:
    if not source.is_dir():
        raise DatasetError(f"source={source} is not a folder: give the folder that holds your pictures")
    resolved_source, resolved_out = source.resolve(), out.resolve()
    if resolved_out == resolved_source or resolved_source in resolved_out.parents:
        raise DatasetError(
            f"out={out} is inside source={source}: the source is never written to; choose an out folder elsewhere"
        )
    if resolved_out in resolved_source.parents:
        raise DatasetError(f"source={source} is inside out={out}: choose an out folder that does not hold it")


def skip_reasons(skipped: list[Skipped], shown: int = 3) -> str:
    """The first few skipped files with their reasons, for an error line ("" when none was skipped)."""
    if not skipped:
        return ""
    listed = "; ".join(f"{item.path.name}: {item.reason}" for item in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f" ({len(skipped)} skipped: {listed}{more})"


def _remove_stale_temp_files(out: Path) -> int:
    """Delete the temp files (`.<name>-*.tmp`) that a killed run's atomic writes left behind."""
    stale = [path for path in out.rglob(".*.tmp") if path.is_file()] if out.is_dir() else []
    for path in stale:
        path.unlink()
    return len(stale)


def _tag_rules(cfg: PrepareConfig) -> TagRules:
    tags = cfg.tags
    return TagRules(
        merge={str(k): [str(t) for t in v] for k, v in (tags.merge or {}).items()},
        remove=[str(t) for t in tags.remove],
        synonyms={str(k): str(v) for k, v in (tags.synonyms or {}).items()},
        dedupe=tags.dedupe,
        class_word=cfg.class_word if tags.prepend_class_word else None,
        underscores_to_spaces=tags.underscores_to_spaces,
        keep_first=[str(t) for t in tags.keep_first],
    )


def finish_caption(raw: str, cfg: PrepareConfig, rules: TagRules) -> str:
    """The caption written for training: tag rules applied, and the trigger first even where no merge put it."""
    caption = apply_rules(raw, rules) if raw.strip() else ""
    tags = split_tags(caption)
    if normalize_tag(cfg.trigger) not in {normalize_tag(tag) for tag in tags}:
        tags.insert(0, cfg.trigger)
    return ", ".join(tags)


def _make_captioner(cfg: PrepareConfig):
    from captioning import make_captioner

    options = dict(cfg.captioner.options)
    if cfg.captioner.model:
        options["model"] = cfg.captioner.model
    return make_captioner(cfg.captioner.name, **options)


class _Writer:
    """Frames, captions and writes pending pictures batch by batch, recording each in the manifest."""

    def __init__(self, cfg: PrepareConfig, out: Path, train_dir: Path, manifest: Manifest) -> None:
        self.cfg, self.out, self.train_dir, self.manifest = cfg, out, train_dir, manifest
        self.framer = Framer(cfg.crop)
        self.rules = _tag_rules(cfg)
        self.captioner = None

    def _raw_captions(self, batch: list[SourceImage], pictures: list[Image.Image]) -> list[tuple[str, str]]:
        """(caption, origin) per picture: its caption file, else the captioner, else nothing."""
        use_file = [bool(image.caption) and not self.cfg.overwrite for image in batch]
        need = [i for i, from_file in enumerate(use_file) if not from_file]
        generated: dict[int, str] = {}
        if need and self.cfg.captioner.name != "none":
            if self.captioner is None:
                self.captioner = _make_captioner(self.cfg)
            for i, text in zip(need, self.captioner.caption([pictures[i] for i in need]), strict=True):
                generated[i] = text
        result = []
        for i, image in enumerate(batch):
            if use_file[i]:
                result.append((image.caption or "", "file"))
            elif i in generated:
                result.append((generated[i], self.cfg.captioner.name))
            else:
                result.append((image.caption or "", "file" if image.caption else "none"))
        return result

    def write_batch(self, batch: list[SourceImage], names: dict[str, str]) -> None:
        background = tuple(int(c) for c in self.cfg.background)
        framed = [self.framer.frame(load_source_image(image, background)) for image in batch]
        captions = self._raw_captions(batch, [f.picture for f in framed])
        for image, frame, (raw, origin) in zip(batch, framed, captions, strict=True):
            caption = finish_caption(raw, self.cfg, self.rules)
            stem = names[image.sha256]
            copies = [(stem, frame.picture)]
            if self.cfg.mirror:
                copies.append((f"{stem}_mirror", ImageOps.mirror(frame.picture)))
            outputs = [
                path.relative_to(self.out).as_posix()
                for name, picture in copies
                for path in write_captioned_picture(self.train_dir, name, picture, caption, durable=False)
            ]
            self.manifest.append(
                {
                    "source": str(image.path),
                    "sha256": image.sha256,
                    "size": list(image.size),
                    "crop_box": list(frame.box),
                    "bucket": list(frame.bucket),
                    "raw_caption": raw,
                    "caption_origin": origin,
                    "caption": caption,
                    "outputs": outputs,
                }
            )


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Run the whole stage for `cfg`; re-running on the same `out` finishes and skips what is done."""
    start = time.perf_counter()
    source, out = Path(cfg.source).expanduser(), Path(cfg.out).expanduser()
    _check_folders(source, out)
    out.mkdir(parents=True, exist_ok=True)
    stale = _remove_stale_temp_files(out)
    scan = scan_source(source, cfg.min_size, tuple(int(c) for c in cfg.background))
    duplicates = find_duplicates(scan.images, cfg.near_duplicate_distance)
    dropped = {str(d.path) for d in duplicates}
    images = [image for image in scan.images if str(image.path) not in dropped]
    if not images:  # the reasons in the line itself: no report is written for an empty run
        raise DatasetError(f"source={source}: no usable pictures{skip_reasons(scan.skipped)}")
    train_dir = out / "train" / dataset_folder_name(cfg.repeats, cfg.trigger, cfg.class_word)
    manifest = Manifest(out / "manifest.jsonl")
    pending = [image for image in images if not manifest.is_done(image.sha256, out)]
    writer = _Writer(cfg, out, train_dir, manifest)
    names = _output_names(images)
    batch_size = cfg.captioner.batch_size
    with tqdm(total=len(images), initial=len(images) - len(pending), desc="preparing", unit="img") as bar:
        for first in range(0, len(pending), batch_size):
            batch = pending[first : first + batch_size]
            writer.write_batch(batch, names)
            bar.update(len(batch))
    manifest.rewrite([image.sha256 for image in images])
    entries = [manifest.entries[image.sha256] for image in images]
    pictures_per_image = 2 if cfg.mirror else 1
    regularization = prepare_regularization(
        cfg, out, writer.framer, len(images) * pictures_per_image * cfg.repeats
    )
    seconds = time.perf_counter() - start
    report = {
        "source": str(source),
        "out": str(out),
        "train_dir": str(train_dir),
        "found": len(scan.images) + len(scan.skipped),
        "written": len(images),
        "resumed": len(images) - len(pending),
        "newly_written": len(pending),
        "mirrored": cfg.mirror,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in scan.skipped],
        "duplicates": [{"path": str(d.path), "kept": str(d.kept), "kind": d.kind} for d in duplicates],
        "orphan_captions": [str(p) for p in scan.orphans],
        "notes": [{"path": str(image.path), "note": note} for image in scan.images for note in image.notes]
        + [{"path": str(i.caption_path), "note": i.caption_error} for i in scan.images if i.caption_error],
        "caption_origins": dict(Counter(entry["caption_origin"] for entry in entries)),
        "tags_before": dict(tag_frequencies(entry["raw_caption"] for entry in entries).most_common()),
        "tags_after": dict(tag_frequencies(entry["caption"] for entry in entries).most_common()),
        "regularization": regularization,
        "stale_temp_files_removed": stale,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(pending) / seconds, 2) if seconds > 0 else None,
    }
    write_report(out, report)
    os.sync()  # the pictures were written without one fsync each; make them durable once
    write_bytes_atomic(out / "prepare_config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)).encode())
    return PrepareResult(out, train_dir, len(images), len(images) - len(pending), seconds, report)
