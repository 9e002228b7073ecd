"""Render an evaluation report: JSON-safe values, the environment block, and the markdown table the CLI prints."""

from __future__ import annotations

import math
import platform
import time
from datetime import datetime, timezone


def json_safe(value):
    """Recursively replace non-finite floats (PSNR of identical images is inf) by the strings 'inf' / 'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def environment(device: str) -> dict:
    """Machine and library versions a number was produced with."""
    import numpy
    import scipy
    import torch

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
    }


def protocol_report(protocol: str, title: str, source: str, setting: str, metrics: dict, labels: dict, counts: dict,
                    *, missing: dict | None = None, details: dict | None = None, inputs: dict | None = None,
                    started: float, device: str = "cpu") -> dict:
    """A JSON-safe report of a protocol that scores no images against images (retrieval, captions), in the shape of
    `atelier.metrics.evaluate`'s: metrics that could not be computed are None with their reason in `missing`;
    `counts` says what was scored (its "scored" entry is printed first)."""
    missing = dict(missing or {})
    for key, value in metrics.items():
        if value is None:
            missing.setdefault(key, "not computed")
    return json_safe({
        "protocol": protocol,
        "title": title,
        "source": source,
        "setting": setting,
        "size": None,
        "stamp": None,
        "metrics": metrics,
        "missing": missing,
        "labels": labels,
        "details": details or {},
        "counts": counts,
        "inputs": {key: None if value is None else str(value) for key, value in (inputs or {}).items()},
        "environment": environment(device),
        "seconds": round(time.time() - started, 2),
    })


def _format(key: str, value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, str):
        return value
    if key.startswith("fid") or key.startswith("kid") or key == "psnr":
        return f"{value:.3f}"
    if "R@" in key or key.endswith("mean") or key in ("bleu_4", "meteor", "rouge_l", "cider_d"):
        return f"{value:.2f}"  # percentages (and CIDEr-D x 100), as the papers print them
    return f"{value:.4f}"


def _counts_line(counts: dict) -> str:
    """One line of what was scored: generated and real images for image protocols, else every count by name."""
    if "real" in counts:
        return f"{counts['scored']} generated images scored, real set {counts['real']} images."
    return "counts: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items()) + "."


def _category_grid(report: dict) -> list[str]:
    """One row per category (keys `<metric>/<category>`) under the row of all images (plain keys), one column per
    metric, then each metric's settings."""
    metrics, summary = report["metrics"], report["categories"]
    keys = [key for key in metrics if "/" not in key]
    lines = ["| images | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    rows = [("all", report["counts"]["scored"], "")]
    rows += [(category, counts["generated"], f"/{category}") for category, counts in summary.items()]
    for name, count, suffix in rows:
        lines.append(f"| {name} | {count} | " + " | ".join(_format(key, metrics.get(key + suffix)) for key in keys) + " |")
    return lines + [""] + [f"- `{key}`: {report['labels'].get(key, '')}" for key in keys]


def markdown_table(report: dict) -> str:
    """The report as a markdown section: title, stamp, one row per metric with its settings (or, for a per-category
    report, one row per category and a column per metric), then what is missing (keys missing for one reason on one
    line)."""
    setting = ", ".join(str(part) for part in (report["setting"], report.get("size")) if part)
    lines = [f"### {report['title']} (`{report['protocol']}`, {setting})", ""]
    if report.get("stamp"):
        lines += [f"**{report['stamp']}**", ""]
    if report.get("categories"):
        lines += _category_grid(report)
    else:
        lines += ["| metric | value | settings |", "|---|---|---|"]
        for key, value in report["metrics"].items():
            shown = _format(key, value)
            if key == "kid_x1000" and value is not None and "kid_std_x1000" in report["details"]:
                shown += f" ± {report['details']['kid_std_x1000']:.3f}"
            lines.append(f"| {key} | {shown} | {report['labels'].get(key, '')} |")
    counts = report["counts"]
    lines += ["", _counts_line(counts)]
    if counts.get("pairs_without_output"):
        lines.append(f"{counts['pairs_without_output']} listed pairs have no generated image.")
    by_reason: dict[str, list[str]] = {}
    for key, reason in report.get("missing", {}).items():
        by_reason.setdefault(reason, []).append(f"`{key}`")
    lines += [f"- {', '.join(keys)} missing: {reason}" for reason, keys in by_reason.items()]
    return "\n".join(lines) + "\n"
