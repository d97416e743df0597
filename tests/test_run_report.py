"""`report.html` from what a run folder holds, and `python -m train.report`'s errors (the page of a real run,
opened in a browser, is tested in test_tracked_run.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.test_cli import REPO
from train.report import write_report
from train.report_charts import line_chart, nice_ticks


def report_command(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "train.report", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_report_command_says_in_one_line_what_is_wrong(tmp_path):
    missing = report_command(f"run={tmp_path / 'nowhere'}")
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == f"error: run={tmp_path / 'nowhere'}: no such folder"
    )
    (tmp_path / "empty").mkdir()
    empty = report_command(f"run={tmp_path / 'empty'}")
    assert empty.returncode == 2 and "not a run folder" in empty.stderr and "Traceback" not in empty.stderr
    assert report_command().stderr.startswith("error: usage: python -m train.report run=")


def test_a_run_stopped_early_gets_a_report_of_what_exists(tmp_path):
    rows = [{"step": s, "loss/current": 0.5 / s, "loss/average": 0.4, "lr/unet": 1e-4 * s} for s in (1, 2, 3)]
    lines = [json.dumps(r) for r in rows] + ['{"step": 4, "loss/current": null}', '{"step": 5, "loss/cu']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))  # a null (NaN) and a line cut by a kill
    (tmp_path / "config.yaml").write_text("name: a&b\neval:\n  prompts: ['<i>x</i>']\n")
    page = write_report(tmp_path).read_text()
    assert "unfinished: no final LoRA" in page and "<h1>a&amp;b</h1>" in page and "&lt;i&gt;x" in page
    assert "3 steps" not in page and "4 steps" in page  # the last row logged, even with a null loss
    assert page.count("<polyline") == 3 and "Evaluation grids" not in page and "LoRA files" not in page


def test_learning_rates_spanning_decades_are_drawn_on_a_log_scale():
    warmup = {"lr/unet": [(float(s), 1e-6 * 10 ** (s / 10)) for s in range(31)]}
    assert "(log scale)" in line_chart("Learning rate", warmup)
    assert "(log scale)" not in line_chart("Loss", {"loss/current": [(1.0, 0.2), (2.0, 0.1)]})
    assert nice_ticks(0.0, 1200.0) == [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0]
    assert nice_ticks(0.031, 0.058) == [0.035, 0.04, 0.045, 0.05, 0.055]
