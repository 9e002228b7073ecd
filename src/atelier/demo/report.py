"""The demo's HTML report: one section per task, each with its numbers beside a baseline, pictures, plots, config."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.utils.io import write_json, write_text


@dataclass
class Table:
    """A results table: rows of {column: value}; `caption` says what the numbers are and which way is better."""

    caption: str
    rows: list[dict[str, Any]]


@dataclass
class Section:
    task: str
    title: str
    summary: str  # one paragraph: what ran, what was measured, the verdict
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, path)
    config: str = ""  # YAML text
    timings: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # named pass/fail claims (e.g. "beats baseline")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _table_html(table: Table) -> str:
    if not table.rows:
        return ""
    columns = list(dict.fromkeys(key for row in table.rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>" for row in table.rows)
    return f"<table><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table>"


def _section_html(section: Section, root: Path) -> str:
    parts = [f"<section id='{section.task}'><h2>{html.escape(section.title)}</h2><p>{html.escape(section.summary)}</p>"]
    if section.checks:
        items = "".join(f"<li class='{'ok' if ok else 'bad'}'>{'PASS' if ok else 'FAIL'}: {html.escape(name)}</li>"
                        for name, ok in section.checks.items())
        parts.append(f"<ul class='checks'>{items}</ul>")
    parts += [_table_html(t) for t in section.tables]
    for caption, path in section.images:
        rel = Path(path).resolve().relative_to(root.resolve()) if Path(path).resolve().is_relative_to(root.resolve()) else path
        parts.append(f"<figure><img src='{html.escape(str(rel))}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    if section.timings:
        rows = [{"step": k, "seconds": round(v, 1)} for k, v in section.timings.items()]
        parts.append(_table_html(Table("timings (2-core CPU unless stated)", rows)))
    if section.config:
        parts.append(f"<details><summary>config</summary><pre>{html.escape(section.config)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}caption{text-align:left;font-style:italic;padding:4px 0}img{max-width:100%;image-rendering:pixelated}
figure{margin:1em 0}.ok{color:#080}.bad{color:#b00}pre{background:#f7f7f7;padding:8px;overflow:auto}"""


def write_report(sections: list[Section], folder: Path, header: str) -> Path:
    """Write report.html and report.json (all numbers) into `folder`; return the HTML path."""
    body = "\n".join(_section_html(s, folder) for s in sections)
    toc = " · ".join(f"<a href='#{s.task}'>{html.escape(s.title)}</a>" for s in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>atelier demo</title><style>{STYLE}</style></head>"
            f"<body><h1>atelier demo report</h1><p>{html.escape(header)}</p><p>{toc}</p>{body}</body></html>")
    write_text(folder / "report.html", page)
    numbers = {s.task: {"title": s.title, "summary": s.summary, "checks": s.checks, "timings": s.timings,
                        "tables": [{"caption": t.caption, "rows": t.rows} for t in s.tables]} for s in sections}
    write_json(folder / "report.json", json.loads(json.dumps(numbers, default=str)))
    return folder / "report.html"
