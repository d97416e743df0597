"""`python -m inference.extras image=PICTURE_OR_FOLDER upscaler=NAME scale=2 [key=value ...]`.

A1111's Extras upscale (configs/inference/extras.yaml): each picture upscaled by an upscaler file from
upscaler_dir (ESRGAN / Real-ESRGAN) or Lanczos, written as PNG with the Extras infotext. User mistakes print
one `error:` line and exit with status 2; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from data.errors import run_reporting_user_errors


def run(cfg: DictConfig) -> None:
    """Validate, upscale, print what was written where."""
    from inference.extras.cli import load_extras_config, run_extras

    result = run_extras(load_extras_config(cfg))
    count = len(result.paths)
    print(f"\nUpscaled {count} picture{'s' * (count != 1)} with {result.upscaler} in {result.seconds:.1f} s")
    for source, path in zip(result.sources, result.paths, strict=True):
        print(f"  {source} → {path}")


@hydra.main(version_base="1.3", config_path="../../configs/inference", config_name="extras")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_reporting_user_errors(run, cfg)


def quote_upscaler(argv: list[str]) -> list[str]:
    """Quote `upscaler=NAME` for Hydra, so names such as `4x_foo (v2)` or `a,b` stay one string.

    (inference.cli quotes its own keys the same way, but importing it loads the whole engine: seconds.)
    """
    quoted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "upscaler" and not value.startswith(("'", '"')):
            arg = "upscaler='" + value.replace("'", "\\'") + "'"
        quoted.append(arg)
    return quoted


if __name__ == "__main__":
    sys.argv = quote_upscaler(sys.argv)
    main()
