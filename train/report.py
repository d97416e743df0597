"""`report.html` in a run folder: the config, loss and lr curves, samples, grids, scores and the LoRA files.

One static page with relative links, inline CSS and SVG charts: it opens from disk in any browser with no
network, and still works after the folder is moved or copied. Training writes it at the end (also when a
run fails or is interrupted, with what exists); `python -m train.report run=<run folder>` writes it again.
"""

from __future__ import annotations

import logging
import sys
import time
from html import escape
from pathlib import Path
from urllib.parse import quote

from data.atomic import write_text_atomic
from data.errors import LoraSmithError
from train.report_charts import line_chart, metric_series
from train.run_contents import RunContents, png_caption, read_run, score_table

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.status { padding: 0.5em 0.8em; border-radius: 4px; background: #e8f5e9; }
.status.failed { background: #fdecea; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
.samples figure img { width: 192px; } .samples figcaption { max-width: 192px; font-size: 0.8em; }
.grid img { max-width: 1050px; }
.charts { display: flex; flex-wrap: wrap; gap: 0.5em; } .charts figure { margin: 0; }
.legend { font-size: 0.8em; } .key { margin-right: 1em; white-space: nowrap; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }
.muted { color: #777; }
"""


def write_report(run_dir: Path, failure: str | None = None) -> Path:
    """Write `run_dir/report.html` atomically from what the folder holds; `failure` says how the run ended
    when it did not finish (the error's one line)."""
    contents = read_run(run_dir)
    return write_text_atomic(run_dir / REPORT_NAME, render_report(contents, failure), durable=False)


def write_report_after_run(run_dir: Path, error: BaseException | None) -> Path | None:
    """The end-of-training report; a report that cannot be written is a warning, never the run's error."""
    try:
        return write_report(run_dir, failure_line(error))
    except Exception as problem:  # the run's own outcome (and its error) matters more than its report
        log.warning("could not write %s: %s", run_dir / REPORT_NAME, problem)
        return None


def failure_line(error: BaseException | None) -> str | None:
    """What the report says about a run that did not finish (None when it did)."""
    if error is None:
        return None
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, LoraSmithError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def render_report(contents: RunContents, failure: str | None = None) -> str:
    """The whole page as one string; every text from the folder (config, captions, names) is escaped."""
    sections = [
        _status(contents, failure),
        _curves(contents),
        _scores(contents),
        _pictures("Evaluation grids", "grid", contents.grids, contents, prompts=False),
        _pictures("Samples", "samples", contents.samples, contents, prompts=True),
        _lora_files(contents),
        _config(contents),
    ]
    title = escape(contents.name)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request: the page loads nothing it does not show
        f"<title>{title} — LoraSmith run report</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{title}</h1>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )


def _status(contents: RunContents, failure: str | None) -> str:
    steps = contents.metrics[-1]["step"] if contents.metrics else 0
    averages = [r["loss/average"] for r in contents.metrics if isinstance(r.get("loss/average"), float)]
    loss = f", final average loss {averages[-1]:.4f}" if averages else ""
    if failure:
        state, css = f"stopped: {escape(failure)}", "status failed"
    elif contents.finished:
        state, css = "finished", "status"
    else:
        state, css = "unfinished: no final LoRA in this folder", "status failed"
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f'<p class="{css}">{state}</p>\n<p>{steps} steps{loss}. '
        f'<span class="muted">Report written {written}.</span></p>'
    )


def _curves(contents: RunContents) -> str:
    charts = [
        line_chart("Loss", metric_series(contents.metrics, "loss/")),
        line_chart("Learning rate", metric_series(contents.metrics, "lr/")),
    ]
    charts = [c for c in charts if c]
    return f'<h2>Curves</h2>\n<div class="charts">{"".join(charts)}</div>' if charts else ""


def _scores(contents: RunContents) -> str:
    tables = []
    for path, scores in contents.scores.items():
        columns, rows = score_table(scores)
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        tables.append(f"<h3>{_link(path, contents)}</h3><table><tr>{head}</tr>{body}</table>")
    return "<h2>Scores</h2>\n" + "\n".join(tables) if tables else ""


def _pictures(title: str, css: str, paths: list[Path], contents: RunContents, prompts: bool) -> str:
    """Figures linking to the full-size files; with `prompts`, each captioned with its prompt too (a grid's
    infotext is its first cell's, so grids show their path only)."""
    if not paths:
        return ""
    figures = []
    for path in paths:
        url, name = _relative_url(path, contents), escape(_relative(path, contents))
        prompt = escape(png_caption(path)) if prompts else name
        text = f"{prompt}<br><span class=muted>{name}</span>" if prompt != name else name
        figures.append(
            f'<figure><a href="{url}"><img src="{url}" alt="{prompt}" title="{prompt}"></a>'
            f"<figcaption>{text}</figcaption></figure>"
        )
    return f'<h2>{escape(title)}</h2>\n<div class="{css}">{"".join(figures)}</div>'


def _lora_files(contents: RunContents) -> str:
    if not contents.lora_files:
        return ""
    rows = "".join(
        f'<tr><td>{_link(p, contents)}</td><td class="num">{_size(p.stat().st_size)}</td></tr>'
        for p in contents.lora_files
    )
    return f"<h2>LoRA files</h2>\n<table><tr><th>file</th><th>size</th></tr>{rows}</table>"


def _config(contents: RunContents) -> str:
    if contents.config_text is None:
        return ""
    return (
        f"<h2>Config</h2>\n<details><summary>{_link(contents.run_dir / 'config.yaml', contents)} "
        f"(resolved)</summary><pre>{escape(contents.config_text)}</pre></details>"
    )


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>' if value == value else '<td class="num">nan</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def _link(path: Path, contents: RunContents) -> str:
    return f'<a href="{_relative_url(path, contents)}">{escape(_relative(path, contents))}</a>'


def _relative(path: Path, contents: RunContents) -> str:
    return path.relative_to(contents.run_dir).as_posix()


def _relative_url(path: Path, contents: RunContents) -> str:
    return escape(quote(_relative(path, contents)))


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KiB" if size < 1024**2 else f"{size / 1024**2:.1f} MiB"


def report_command(args: list[str]) -> Path:
    """`run=<folder>`: write that folder's report again; returns its path."""
    runs = [a.split("=", 1)[1] for a in args if a.startswith("run=")]
    if len(runs) != 1 or len(args) != 1:
        raise ReportError("usage: python -m train.report run=<run folder>")
    run_dir = Path(runs[0]).expanduser()
    if not run_dir.is_dir():
        raise ReportError(f"run={run_dir}: no such folder")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise ReportError(f"run={run_dir}: not a run folder (it has neither config.yaml nor metrics.jsonl)")
    return write_report(run_dir.resolve())


class ReportError(LoraSmithError):
    """A report command that names no run folder, or a folder that is not one."""


def main(args: list[str]) -> None:
    from data.errors import run_reporting_user_errors

    path = run_reporting_user_errors(report_command, args)
    print(f"report: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
