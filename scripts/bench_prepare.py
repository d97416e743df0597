"""Throughput of `python -m data` on toy pictures: check + crop + WD14 tags (a tiny ONNX tagger built here),
against check + crop alone in the same run.

    python scripts/bench_prepare.py             # 1,000 pictures
    python scripts/bench_prepare.py --count 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from captioning.tiny_tagger import write_tiny_tagger  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.prepare_config import load_prepare_config  # noqa: E402
from data.toy import world  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TAGS = [("general", 0.9, 9), ("1girl", 0.8, 0), ("solo", 0.7, 0), ("star", 0.5, 0), ("faint", 0.1, 0)]


def write_pictures(folder: Path, count: int) -> None:
    """Toy pictures (base world, character, style) without captions: the captioner has to tag all of them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        concept = (None, "character", "style")[i % 3]
        world.render(world.sample_scene(rng, concept)).save(folder / f"toy{i:05d}.png")


def run(source: Path, out: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "prepare",
            [
                f"source={source}",
                f"out={out}",
                "trigger=sls",
                "class_word=star",
                "min_size=32",
                "crop.width=64",
                "crop.height=64",
                *overrides,
            ],
        )
    start = time.perf_counter()
    report = prepare(load_prepare_config(cfg)).report
    report["wall_seconds"] = time.perf_counter() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_pictures(root / "raw", args.count)
        tagger = write_tiny_tagger(root / "tagger", TAGS)
        plain = run(root / "raw", root / "plain", "near_duplicate_distance=0")
        tagged = run(
            root / "raw",
            root / "tagged",
            "near_duplicate_distance=0",
            "captioner=wd14",
            f"captioner.model={tagger}",
        )
    print(f"\n{args.count} toy pictures (64 px)")
    for name, report in (("check + crop", plain), ("check + crop + WD14 (tiny)", tagged)):
        print(
            f"  {name:28s} {report['written']:5d} written  {report['images_per_second']:8.1f} images/s "
            f"({report['wall_seconds']:.1f} s)"
        )
    print(
        f"  tagging costs {plain['images_per_second'] / tagged['images_per_second']:.2f}x the time of check + crop"
    )


if __name__ == "__main__":
    main()
