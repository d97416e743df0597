"""The results table of a multirun: `results.csv`, `results.md` and `index.html` in its folder, kept up to
date as trials end (a Hydra callback, `hydra.callbacks.sweep_results` in configs/hydra/default.yaml).

Each ending trial writes `trial.json` into its own folder, then the tables are rebuilt from every trial's
record. Rebuilding from the records, never appending, keeps the tables whole when trials of a parallel
launcher end at once; the sweep's end rebuilds them once more, and names the trials whose process died.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from data.atomic import write_text_atomic
from train.trial import FAILURE_FILE

TRIAL_FILE = "trial.json"


@dataclass
class TrialRecord:
    """One trial as the table shows it; `folder` is relative to the multirun folder."""

    number: int
    folder: str
    status: str  # ok | failed | died (no record: the process was killed)
    objective: float | None = None
    direction: str = "minimize"
    overrides: list[str] = field(default_factory=list)
    error: str = ""


class SweepResults(Callback):
    """Hydra callback: a trial's record when it ends, the multirun's tables after each trial and at the end."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        record = record_of(config, job_return, sweep_dir)
        write_text_atomic(sweep_dir / record.folder / TRIAL_FILE, json.dumps(asdict(record), indent=2) + "\n")
        write_tables(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_tables(Path(config.hydra.sweep.dir), finished=True)


def record_of(config: DictConfig, job_return: JobReturn, sweep_dir: Path) -> TrialRecord:
    """The trial's status and value: failed when the job raised or left failure.txt (train/trial.py)."""
    run_dir = Path(config.hydra.runtime.output_dir)
    common = {
        "number": int(config.hydra.job.num),
        "folder": str(run_dir.relative_to(sweep_dir)),
        "direction": str(config.objective.direction),
        "overrides": [str(o) for o in config.hydra.overrides.task],
    }
    if job_return.status == JobStatus.FAILED:
        return TrialRecord(status="failed", error=one_line(job_return._return_value), **common)
    objective = _number(job_return.return_value)
    if (run_dir / FAILURE_FILE).is_file():
        error = (run_dir / FAILURE_FILE).read_text().splitlines()[0]
        return TrialRecord(status="failed", objective=objective, error=error, **common)
    return TrialRecord(status="ok", objective=objective, **common)


def one_line(error: Any) -> str:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return " ".join(text.split())


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def read_records(sweep_dir: Path, finished: bool = False) -> list[TrialRecord]:
    """Every trial's record, by number; at the sweep's end a numbered folder without one is a died trial."""
    records = [TrialRecord(**json.loads(p.read_text())) for p in sweep_dir.glob(f"*/{TRIAL_FILE}")]
    if finished:
        known = {r.folder for r in records}
        for folder in sweep_dir.iterdir():
            if folder.is_dir() and folder.name.isdigit() and folder.name not in known:
                records.append(
                    TrialRecord(int(folder.name), folder.name, "died", error="no record: the process died")
                )
    return sorted(records, key=lambda r: r.number)


def swept_params(records: list[TrialRecord]) -> list[str]:
    """The override keys whose values differ between trials (with one trial: all of its overrides); trials
    that died left no overrides and do not count."""
    given = [split_overrides(r.overrides) for r in records if r.overrides]
    keys = list(dict.fromkeys(k for overrides in given for k in overrides))
    if len(given) <= 1:
        return keys
    return [k for k in keys if len({overrides.get(k) for overrides in given}) > 1]


def split_overrides(overrides: list[str]) -> dict[str, str]:
    """`key=value` overrides as {key: value}; `+`/`++` (add, force-add) set the same key as without them."""
    pairs = (o.split("=", 1) if "=" in o else (o, "") for o in overrides)
    return {key.lstrip("+"): value for key, value in pairs}


def short(value: str) -> str:
    """A number as 4 significant digits for the md and html tables (results.csv keeps it whole)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 8 else f"{number:.4g}"


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The ok trial with the best objective in its direction."""
    done = [r for r in records if r.status == "ok" and r.objective is not None]
    if not done:
        return None
    pick = max if done[0].direction == "maximize" else min
    return pick(done, key=lambda r: r.objective)


def rows(records: list[TrialRecord], shorten=str) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: trial, status, objective, each swept parameter, run folder, error."""
    params = swept_params(records)
    header = ["trial", "status", "objective", *params, "run folder", "error"]
    body = []
    for r in records:
        given = split_overrides(r.overrides)
        objective = "" if r.objective is None else f"{r.objective:.6g}"
        body.append(
            [
                str(r.number),
                r.status,
                objective,
                *(shorten(given.get(k, "")) for k in params),
                r.folder,
                r.error,
            ]
        )
    return header, body


def results_csv(records: list[TrialRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header, body = rows(records)
    writer.writerows([header, *body])
    return out.getvalue()


def results_md(records: list[TrialRecord]) -> str:
    header, body = rows(records, short)
    best = best_trial(records)
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r, row in zip(records, body, strict=True):
        if best is not None and r.number == best.number:
            row = [row[0], "**best**", f"**{row[2]}**", *row[3:]]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    title = f"# Sweep results ({len(records)} trials"
    title += (
        f", best: trial {best.number}, objective {best.objective:.6g}, {best.direction})" if best else ")"
    )
    return title + "\n\n" + "\n".join(lines) + "\n"


def write_tables(sweep_dir: Path, finished: bool = False) -> None:
    """results.csv, results.md and index.html of the multirun in `sweep_dir`, from the trials' records."""
    from train.sweep_index import index_html

    records = read_records(sweep_dir, finished)
    if not records:
        return
    write_text_atomic(sweep_dir / "results.csv", results_csv(records), durable=False)
    write_text_atomic(sweep_dir / "results.md", results_md(records), durable=False)
    header, body = rows(records, short)
    write_text_atomic(
        sweep_dir / "index.html",
        index_html(sweep_dir, records, header, body, best_trial(records)),
        durable=False,
    )
