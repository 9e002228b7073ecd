"""The demo's HTML report: one section per stage result, each with its numbers beside a baseline, checks, pictures, config.

The page opens with how a verdict is decided (results.RULE) and every stage's first line (its verdict: a stage with a
failed check says so there, and again atop its section). Beside report.html: report.json (every number, check and
margin, and each check's paired test: n, mean difference, interval, p-value), the stages' grids (saved here from their
rows) and OUT/configs/<task>.yaml (the settings behind each stage's numbers, also shown in the report).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from atelier.config import save_yaml
from atelier.demo.results import RULE, Check, Figure, StageResult, Table, verdict
from atelier.utils.images import make_grid
from atelier.utils.io import save_image, write_json, write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}caption{text-align:left;font-style:italic;padding:4px 0}img{max-width:100%;image-rendering:pixelated}
figure{margin:1em 0}.ok{color:#080}.bad{color:#b00}.verdict{font-weight:bold}.margin{color:#666}pre{background:#f7f7f7;padding:8px;overflow:auto}"""


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


def _checks_html(checks: list[Check]) -> str:
    """PASS/FAIL, the claim and its margin (interval, sign test, means) per check; a combined check lists its parts."""
    items = "".join(f"<li class='{'ok' if check.passed else 'bad'}'>{'PASS' if check.passed else 'FAIL'}: "
                    f"{html.escape(check.claim)}{_margin_html(check)}{_checks_html(check.parts)}</li>" for check in checks)
    return f"<ul class='checks'>{items}</ul>" if checks else ""


def _margin_html(check: Check) -> str:
    if not check.margin or check.parts:  # a combined check's margin is its parts', listed below it
        return ""
    return f" <span class='margin'>(margin: {html.escape(check.margin)})</span>"


def _verdict_html(result: StageResult, tag: str = "p") -> str:
    failed = any(not check.passed for check in result.checks)
    return f"<{tag} class='verdict {'bad' if failed else 'ok'}'>{html.escape(verdict(result))}</{tag}>"


def _figure_html(figure: Figure, root: Path) -> str:
    if figure.grid is not None:  # the stage handed over the rows; the picture is made here
        save_image(make_grid(figure.grid, cell=figure.cell), figure.path)
    path = Path(figure.path).resolve()
    shown = path.relative_to(root.resolve()) if path.is_relative_to(root.resolve()) else figure.path
    return f"<figure><img src='{html.escape(str(shown))}'><figcaption>{html.escape(figure.caption)}</figcaption></figure>"


def _config_html(result: StageResult, root: Path) -> str:
    if not result.config:
        return ""
    path = root / "configs" / f"{result.task}.yaml"
    save_yaml(result.config, path)
    return (f"<details><summary>config (<a href='configs/{html.escape(path.name)}'>{html.escape(path.name)}</a>)</summary>"
            f"<pre>{html.escape(path.read_text(encoding='utf-8'))}</pre></details>")


def _section_html(result: StageResult, root: Path) -> str:
    parts = [f"<section id='{result.task}'><h2>{html.escape(result.title)}</h2>{_verdict_html(result)}"
             f"<p>{html.escape(result.summary)}</p>"]
    parts += [f"<p class='note'>Note: {html.escape(note)}</p>" for note in result.notes]
    parts.append(_checks_html(result.checks))
    parts += [_table_html(table) for table in result.tables]
    parts += [_figure_html(figure, root) for figure in result.figures]
    if result.timings:
        rows = [{"step": name, "seconds": round(seconds, 1)} for name, seconds in result.timings.items()]
        parts.append(_table_html(Table("timings (2-core CPU unless stated)", rows)))
    parts.append(_config_html(result, root))
    parts.append("</section>")
    return "\n".join(part for part in parts if part)


def _numbers(result: StageResult) -> dict[str, Any]:
    """A stage's entry in report.json."""
    return {"title": result.title, "verdict": verdict(result), "summary": result.summary, "notes": result.notes,
            "checks": {check.claim: check.passed for check in result.checks},
            "margins": {check.claim: check.margin for check in result.checks},
            "tests": {check.claim: check.numbers() for check in result.checks}, "timings": result.timings,
            "tables": [{"caption": table.caption, "rows": table.rows} for table in result.tables]}


def write_report(results: list[StageResult], folder: Path, header: str) -> Path:
    """Write report.html, report.json and the stages' grids and configs into `folder`; return the HTML path."""
    body = "\n".join(_section_html(result, folder) for result in results)
    toc = "".join(f"<li><a href='#{result.task}'>{html.escape(result.title)}</a>: {_verdict_html(result, 'span')}</li>"
                  for result in results)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>atelier demo</title><style>{STYLE}</style></head>"
            f"<body><h1>atelier demo report</h1><p>{html.escape(header)}</p><p class='rule'>{html.escape(RULE)}</p>"
            f"<ul class='stages'>{toc}</ul>{body}</body></html>")
    write_text(folder / "report.html", page)
    numbers = {result.task: _numbers(result) for result in results}
    write_json(folder / "report.json", json.loads(json.dumps(numbers, default=str)))
    return folder / "report.html"
