"""Bring a kohya config along: `python scripts/from_kohya.py config.toml [dataset.toml] [--write FILE]`.

Reads sd-scripts' `--config_file` TOML (flat or in tables), its dataset TOML, or the kohya_ss GUI's saved
`.json`; prints the `python -m train` command, or with `--write` an experiment file
(`configs/experiment/NAME.yaml`, then `python -m train +experiment=NAME`). Every setting we lack is listed
with the reason; none is dropped silently.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.atomic import write_text_atomic  # noqa: E402
from train.kohya_config import Conversion, convert, experiment_yaml  # noqa: E402
from train.kohya_files import dataset_settings, read_settings, read_toml  # noqa: E402


def how_to_use(written: Path) -> str:
    """The command that trains with an experiment file: `+experiment=NAME` once it is in configs/experiment."""
    experiments = Path(__file__).resolve().parents[1] / "configs" / "experiment"
    if written.resolve().parent == experiments:
        return f"python -m train +experiment={written.stem}"
    return f"copy it into {experiments}, then: python -m train +experiment={written.stem}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="kohya TOML or kohya_ss GUI JSON")
    parser.add_argument("dataset", type=Path, nargs="?", help="kohya dataset TOML (--dataset_config)")
    parser.add_argument("--write", type=Path, help="write an experiment YAML here instead of printing")
    parser.add_argument("--force", action="store_true", help="let --write replace an existing file")
    args = parser.parse_args(argv)
    reading = args.config
    try:
        settings = read_settings(reading)
        lacking: list[str] = []
        if args.dataset:
            reading = args.dataset
            extra, lacking = dataset_settings(read_toml(reading))
            settings.update(extra)
    except (OSError, ValueError) as error:  # a missing file, or TOML / JSON that does not parse
        print(f"error: cannot read {reading}: {getattr(error, 'strerror', None) or error}")
        return 2
    conversion: Conversion = convert(settings)
    conversion.lacking = lacking + conversion.lacking
    if args.write:
        if args.write.exists() and not args.force:
            print(f"error: {args.write} exists: add --force to replace it, or choose another file")
            return 2
        try:
            write_text_atomic(args.write, experiment_yaml(conversion))
        except OSError as error:
            print(f"error: cannot write {args.write}: {error.strerror or error}")
            return 2
        print(f"wrote {args.write}: {how_to_use(args.write)}")
    else:
        print("python -m train " + " ".join(conversion.overrides))
    for item in conversion.lacking:
        print(f"not converted: {item}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
