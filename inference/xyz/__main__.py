"""`python -m inference.xyz prompt=… x_type=seed x_values="1-3" y_type=cfg y_values="3,7" [key=value ...]`.

A1111's X/Y/Z plot (configs/inference/xyz.yaml). User mistakes print one `error:` line and exit with
status 2; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from data.quiet_logs import quiet_third_party_logs

quiet_third_party_logs()

from data.errors import run_reporting_user_errors  # noqa: E402


def run(cfg: DictConfig) -> None:
    """Validate, render, print what was written where."""
    from inference.xyz.cli import load_xyz_config, run_xyz

    result = run_xyz(load_xyz_config(cfg))
    x, y, z = (len(axis.values) for axis in result.axes)
    grids = f"{z} grid{'s' * (z != 1)} of {x} x {y}"
    print(f"\nX/Y/Z plot: {len(result.cells)} images on {grids} in {result.seconds:.1f} s")
    for letter, axis in zip("XYZ", result.axes, strict=True):
        if axis.axis.key != "nothing":
            print(f"  {letter}: {axis.axis.label} = {', '.join(map(str, axis.values))}")
    print(f"  grid: {result.grid_path}")
    if z > 1:
        print(f"  per Z value: {', '.join(path.name for path in result.sub_grid_paths)}")
    print(f"  cells: {result.cells[0].path.parent}/ ({len(result.cells)} PNGs with infotext)")


@hydra.main(version_base="1.3", config_path="../../configs/inference", config_name="xyz")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    from data.command_line import check_command_line
    from inference.xyz.cli import quote_overrides

    sys.argv = quote_overrides(sys.argv)
    check_command_line(sys.argv[1:])
    main()
