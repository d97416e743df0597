"""`index.html` of a multirun: its trials side by side, best first (objective, parameters, one eval grid
each, links to each trial's folder and report). Static, relative links only, so it opens from disk and
moves with the folder; every text is HTML-escaped."""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

GRID = "eval/grid.png"
REPORT = "report.html"
STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
tr.best{background:#e8f6e8}tr.failed,tr.died{background:#fbeaea}img{max-width:360px}"""


def _order(records, best) -> list[int]:
    """Row indices: the best trial first, then the other ok trials by objective, failed ones last."""
    reverse = best is not None and best.direction == "maximize"

    def key(i: int):
        r = records[i]
        failed = r.status != "ok" or r.objective is None
        value = 0.0 if failed else (-r.objective if reverse else r.objective)
        return (failed, value, r.number)

    return sorted(range(len(records)), key=key)


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(quote(href))}">{escape(text)}</a>'


def _trial_cell(sweep_dir: Path, folder: str) -> str:
    """The grid thumbnail (linked to the full picture) and links to the folder and its report."""
    parts = []
    if (sweep_dir / folder / GRID).is_file():
        src = escape(quote(f"{folder}/{GRID}"))
        parts.append(f'<a href="{src}"><img src="{src}" alt="eval grid of trial {escape(folder)}"></a>')
    links = [_link(f"{folder}/", "run folder")]
    if (sweep_dir / folder / REPORT).is_file():
        links.append(_link(f"{folder}/{REPORT}", "report"))
    return "<br>".join([*parts, " · ".join(links)])


def index_html(sweep_dir: Path, records, header: list[str], body: list[list[str]], best) -> str:
    """The page; `header`/`body` are the results table's (train/sweep_results.py::rows)."""
    shown = [h for h in header if h != "run folder"]
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Sweep results</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Sweep results: {escape(sweep_dir.name)}</h1>",
    ]
    if best is not None:
        lines.append(
            f"<p>{len(records)} trials; best: trial {best.number}, objective {best.objective:.6g} "
            f"({escape(best.direction)}). Also as {_link('results.csv', 'results.csv')} and "
            f"{_link('results.md', 'results.md')}.</p>"
        )
    lines.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in [*shown, "grid"]) + "</tr>")
    for i in _order(records, best):
        r, row = records[i], dict(zip(header, body[i], strict=True))
        css = "best" if best is not None and r.number == best.number else r.status
        cells = "".join(f"<td>{escape(row[h])}</td>" for h in shown)
        lines.append(f'<tr class="{escape(css)}">{cells}<td>{_trial_cell(sweep_dir, r.folder)}</td></tr>')
    lines += ["</table>", "</body></html>"]
    return "\n".join(lines) + "\n"
