"""`python -m data` end to end: bad input never crashes or touches the source, tag rules and captioners reach
the written captions, a killed run resumes, and the result trains with `python -m train` unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from captioning.tiny_tagger import write_tiny_tagger
from data.errors import DatasetError
from data.prepare import prepare
from data.prepare_config import load_prepare_config
from data.toy import world
from data.tree_checksum import tree_checksum
from data.typed_config import ConfigError
from tests.test_scan import build_corpus, picture

REPO = Path(__file__).resolve().parents[1]
SMITH_RAW = (
    "1boy, cooking, frying pan, male focus, solo, gloves, apron, fire, brown footwear, black gloves, boots, "
    "stove, kitchen, holding, facial hair, bandana, blue shirt, shirt"
)
SMITH_MERGED = (
    "Smith, cooking, frying pan, male focus, solo, gloves, apron, fire, brown footwear, black gloves, boots, "
    "stove, kitchen, holding, bandana, blue shirt, shirt"
)


def _config(source: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "prepare",
            [f"source={source}", f"out={out}", "trigger=Smith", "class_word=man", "min_size=32", *overrides],
        )
    return load_prepare_config(cfg)


def _crop64() -> list[str]:
    return ["crop.width=64", "crop.height=64"]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    source = tmp_path_factory.mktemp("corpus") / "pics"
    build_corpus(source)
    before = tree_checksum(source)
    out = tmp_path_factory.mktemp("corpus_out") / "prepared"
    result = prepare(_config(source, out, *_crop64()))
    return source, before, out, result


def test_bad_input_is_reported_and_the_source_is_untouched(corpus_run):
    source, before, out, result = corpus_run
    assert tree_checksum(source) == before
    report = json.loads((out / "report.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    for name in ("truncated.png", "empty.png", "text.jpg", "tiny.png", "wide.png", "pipe.png", "self.png"):
        assert name in skipped and skipped[name], name
    assert {Path(d["path"]).name for d in report["duplicates"]} == {"exact_copy.png", "reencoded.jpg"}
    assert [Path(p).name for p in report["orphan_captions"]] == ["lonely.txt"]
    notes = " ".join(n["note"] for n in report["notes"])
    assert "UTF-8" in notes and "frames" in notes  # the latin-1 caption and the animated GIF
    md = (out / "report.md").read_text()
    assert "truncated.png" in md and "## Tags" in md


def test_written_pictures_captions_and_manifest_agree(corpus_run):
    _, _, out, result = corpus_run
    folder = out / "train" / "10_Smith man"
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == result.written == 9  # the good pictures, duplicates left out
    for png in pngs:
        assert Image.open(png).size == (64, 64)
        assert png.with_suffix(".txt").read_text(encoding="utf-8").startswith("Smith")
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(entries) == 9 and all(
        set(e["outputs"]) <= {p.relative_to(out).as_posix() for p in folder.iterdir()} for e in entries
    )
    clean = next(e for e in entries if e["source"].endswith("clean.png"))
    assert clean["raw_caption"] == "a photo of sks dog" and clean["caption_origin"] == "file"
    assert clean["caption"] == "Smith, a photo of sks dog"  # the trigger goes first where no merge put it
    left, top, right, bottom = clean["crop_box"]
    assert (right - left, bottom - top) == (96, 96) and clean["size"] == [128, 96]  # centre square
    assert not list(out.rglob("*.tmp")) and (out / "prepare_config.yaml").is_file()


def test_smith_tags_merge_into_the_trigger(tmp_path):
    source = tmp_path / "pics"
    source.mkdir()
    picture().save(source / "smith.png")
    (source / "smith.txt").write_text(SMITH_RAW)
    out = tmp_path / "out"
    prepare(_config(source, out, *_crop64(), "tags.merge={Smith: [1boy, facial hair]}"))
    assert (out / "train" / "10_Smith man" / "smith.txt").read_text() == SMITH_MERGED
    report = json.loads((out / "report.json").read_text())
    assert report["tags_before"]["1boy"] == 1 and "1boy" not in report["tags_after"]
    assert report["tags_after"]["Smith"] == 1 and "Smith" not in report["tags_before"]


def test_the_tagger_fills_missing_captions_and_existing_ones_are_kept(tmp_path):
    tags = [
        ("general", 0.9, 9),
        ("1boy", 0.8, 0),
        ("facial_hair", 0.6, 0),
        ("weak", 0.1, 0),
        ("smith_(cook)", 0.9, 4),
    ]
    tagger = write_tiny_tagger(tmp_path / "tagger", tags)
    source = tmp_path / "pics"
    source.mkdir()
    picture(seed=1).save(source / "untagged.png")
    picture(seed=2).save(source / "tagged.png")
    (source / "tagged.txt").write_text("my own caption")
    common = [
        *_crop64(),
        "captioner=wd14",
        f"captioner.model={tagger}",
        "tags.merge={Smith: [1boy, facial hair]}",
    ]
    out = tmp_path / "out"
    prepare(_config(source, out, *common))
    folder = out / "train" / "10_Smith man"
    assert (folder / "untagged.txt").read_text() == "Smith, smith (cook)"
    assert (folder / "tagged.txt").read_text() == "Smith, my own caption"
    again = tmp_path / "again"
    prepare(_config(source, again, *common, "overwrite=true"))
    assert (again / "train" / "10_Smith man" / "tagged.txt").read_text() == "Smith, smith (cook)"


def test_buckets_and_mirrored_copies(tmp_path):
    source = tmp_path / "pics"
    source.mkdir()
    picture(300, 200).save(source / "wide.png")
    picture(200, 300, seed=1).save(source / "tall.png")
    out = tmp_path / "out"
    overrides = [
        "crop=buckets",
        "crop.max_resolution=128",
        "crop.min_bucket_reso=64",
        "crop.max_bucket_reso=256",
        "crop.bucket_reso_steps=32",
        "mirror=true",
    ]
    prepare(_config(source, out, *overrides))
    folder = out / "train" / "10_Smith man"
    wide, tall = Image.open(folder / "wide.png"), Image.open(folder / "tall.png")
    assert wide.width > wide.height and tall.height > tall.width and wide.width % 32 == 0
    mirrored = Image.open(folder / "wide_mirror.png")
    assert np.array_equal(np.asarray(mirrored), np.asarray(wide)[:, ::-1])
    entries = {
        Path(e["source"]).name: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    }
    assert entries["wide.png"]["bucket"] == list(wide.size) and len(entries["wide.png"]["outputs"]) == 4


def test_mistakes_are_clear_errors(tmp_path):
    source = tmp_path / "pics"
    source.mkdir()
    picture().save(source / "a.png")
    with pytest.raises(DatasetError, match="inside source"):
        prepare(_config(source, source / "out", *_crop64()))
    with pytest.raises(ConfigError, match="crop.mode"):
        _config(source, tmp_path / "o", "crop.mode=smart")
    with pytest.raises(ConfigError, match="repeats=20000 must be between 1 and 10000"):
        _config(source, tmp_path / "o", "repeats=20000")
    # every picture skipped: the line itself says why (it pointed at a report that was never written)
    with pytest.raises(DatasetError, match=r"no usable pictures \(1 skipped: a.png: too small: 128×96 px"):
        prepare(_config(source, tmp_path / "small", "min_size=256"))
    result = subprocess.run(
        [sys.executable, "-m", "data", f"source={source}", f"out={tmp_path / 'o'}", "class_word=man"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 2 and "trigger is not set" in result.stderr and "Traceback" not in result.stderr
    )


def _noise_pictures(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # noise: slow to encode, so a run can be caught half-way
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"n{i:04d}.png")


def test_a_killed_run_resumes_without_redoing_or_leaving_partial_files(tmp_path):
    source, out = tmp_path / "pics", tmp_path / "out"
    _noise_pictures(source, 150)
    before = tree_checksum(source)
    command = [
        sys.executable,
        "-m",
        "data",
        f"source={source}",
        f"out={out}",
        "trigger=n",
        "class_word=noise",
        "min_size=32",
        "crop.width=256",
        "crop.height=256",
        "near_duplicate_distance=0",
        "captioner.batch_size=1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if manifest.is_file() and len(manifest.read_bytes().splitlines()) >= 20:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed half-way"
    finished = len([line for line in manifest.read_bytes().splitlines() if line.endswith(b"}")])
    assert 20 <= finished < 150
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] >= finished - 1 and report["resumed"] + report["newly_written"] == 150
    assert not list(out.rglob("*.tmp")) and tree_checksum(source) == before
    pngs = sorted((out / "train" / "10_n noise").glob("*.png"))
    assert len(pngs) == 150 and all(Image.open(p).load() is not None for p in pngs)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 150


def test_toy_pictures_prepared_here_train_unchanged(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        scene = world.sample_scene(rng, "character")
        world.render(scene).save(source / f"toy{i}.png")
        # raw tags as a tagger would write them: the trigger comes from the merge
        (source / f"toy{i}.txt").write_text(
            f"magenta star, yellow ring, {scene.background} background, {scene.size}"
        )
    out = tmp_path / "prepared"
    prepare(
        _config(
            source,
            out,
            *_crop64(),
            "trigger=sls",
            "class_word=star",
            "repeats=2",
            "tags.merge={sls: [magenta star, yellow ring]}",
            "near_duplicate_distance=0",
        )
    )
    caption = (out / "train" / "2_sls star" / "toy0.txt").read_text()
    assert caption.startswith("sls, ") and "magenta" not in caption
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "train",
        "model=tiny",
        "dataset=folders",
        f"dataset.train_dir={out / 'train'}",
        "dataset.resolution=64",
        "training.max_train_steps=2",
        "training.batch_size=2",
        "logger=none",
        "eval=none",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(run_dir.glob("*.safetensors"))


def test_regularization_from_a_folder_and_rendered_by_the_toy_model(tmp_path, caplog):
    source, reg_source = tmp_path / "pics", tmp_path / "class_pics"
    source.mkdir()
    reg_source.mkdir()
    for i in range(2):
        picture(seed=i).save(source / f"p{i}.png")
    for i in range(3):
        picture(seed=10 + i).save(reg_source / f"r{i}.png")
    out = tmp_path / "from_folder"
    report = prepare(
        _config(
            source, out, *_crop64(), "regularization=folder", f"regularization.path={reg_source}", "repeats=2"
        )
    ).report
    reg = out / "reg" / "1_man"
    assert sorted(p.name for p in reg.glob("*.png")) == ["reg_00000.png", "reg_00001.png", "reg_00002.png"]
    assert Image.open(reg / "reg_00000.png").size == (64, 64) and (reg / "reg_00000.txt").read_text() == "man"
    assert "3 regularization pictures for 4 training samples" in report["regularization"]["warning"]

    rendered = tmp_path / "rendered"
    overrides = [
        "crop.width=64",
        "crop.height=64",
        "class_word=star",
        "regularization=generate",
        "regularization.count=3",
        "regularization.steps=2",
        "regularization.batch_size=2",
        "repeats=1",
    ]
    report = prepare(_config(source, rendered, *overrides)).report
    pictures = sorted((rendered / "reg" / "1_star").glob("*.png"))
    assert len(pictures) == 3 and "warning" not in report["regularization"]
    again = tmp_path / "again"
    prepare(_config(source, again, *overrides))
    assert all((again / "reg" / "1_star" / p.name).read_bytes() == p.read_bytes() for p in pictures)  # seeds
