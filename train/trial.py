"""One job of a multirun (`python -m train -m …`): a failed trial is one line and a bad value, not a dead sweep.

A user error or a crash prints `trial N failed: …`, writes `failure.txt` (the line, then the traceback) into
the trial's folder, where the results table finds it, and returns `objective.failed_value`, which the
sweeper records like any other value. Single runs keep their exit codes (data.errors).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from data.atomic import write_text_atomic
from data.errors import LoraSmithError

FAILURE_FILE = "failure.txt"


def in_multirun() -> bool:
    """True inside a job of `python -m train -m …` (any launcher)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_line(error: BaseException) -> str:
    """A user error as its own message; a crash as its type and message."""
    if isinstance(error, LoraSmithError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_trial(run: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """`run(cfg)`, or on any failure but Ctrl-C: one line on stderr, failure.txt, `objective.failed_value`."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return run(cfg)
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR", "0") not in ("0", "", "false"):
            raise
        hydra = HydraConfig.get()
        line = failure_line(error)
        folder = Path(hydra.runtime.output_dir)
        write_text_atomic(folder / FAILURE_FILE, line + "\n\n" + traceback.format_exc())
        print(f"trial {hydra.job.num} failed: {line} ({folder / FAILURE_FILE})", file=sys.stderr)
        return float(OmegaConf.select(cfg, "objective.failed_value"))
