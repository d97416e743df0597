"""`report.json` and `report.md` of the preparation stage: counts, every skipped file with its reason, and
tag frequencies before and after the tag rules."""

from __future__ import annotations

import json
from pathlib import Path

from data.atomic import write_bytes_atomic

TOP_TAGS = 30


def _tag_table(before: dict[str, int], after: dict[str, int]) -> list[str]:
    lines = ["| tag | before | after |", "|---|---|---|"]
    names = list(dict.fromkeys([*list(after)[:TOP_TAGS], *list(before)[:TOP_TAGS]]))
    lines += [f"| {name} | {before.get(name, 0)} | {after.get(name, 0)} |" for name in names]
    return lines


def render_markdown(report: dict) -> str:
    """The report as Markdown, for people."""
    reg = report["regularization"]
    lines = [
        "# Dataset preparation report",
        "",
        f"- source: `{report['source']}` (read only)",
        f"- training folder: `{report['train_dir']}`",
        f"- pictures found: {report['found']}; written: {report['written']} "
        f"({report['newly_written']} this run, {report['resumed']} from an earlier run)"
        + (", each with a mirrored copy" if report["mirrored"] else ""),
        f"- skipped: {len(report['skipped'])}; duplicates left out: {len(report['duplicates'])}; "
        f"captions without a picture: {len(report['orphan_captions'])}",
        f"- captions from: {', '.join(f'{k} {v}' for k, v in sorted(report['caption_origins'].items()))}",
        f"- regularization: {reg['summary']}",
        f"- time: {report['seconds']} s ({report['images_per_second']} images/s)",
        "",
    ]
    if reg.get("warning"):
        lines += [f"**Warning:** {reg['warning']}", ""]
    sections = [
        ("Skipped files", [f"- `{s['path']}`: {s['reason']}" for s in report["skipped"]]),
        ("Duplicates", [f"- `{d['path']}`: {d['kind']} of `{d['kept']}`" for d in report["duplicates"]]),
        ("Captions without a picture", [f"- `{p}`" for p in report["orphan_captions"]]),
        ("Notes", [f"- `{n['path']}`: {n['note']}" for n in report["notes"]]),
    ]
    for title, items in sections:
        if items:
            lines += [f"## {title}", "", *items, ""]
    lines += [
        "## Tags (pictures holding each tag)",
        "",
        *_tag_table(report["tags_before"], report["tags_after"]),
    ]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    """Write `report.json` and `report.md` into `out`, atomically."""
    write_bytes_atomic(
        out / "report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
    )
    write_bytes_atomic(out / "report.md", render_markdown(report).encode("utf-8"))
