"""Render an evaluation report: JSON-safe values, the environment block, and the markdown table the CLI prints."""

from __future__ import annotations

import math
import platform
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


def _format(key: str, value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, str):
        return value
    if key.startswith("fid") or key.startswith("kid") or key == "psnr":
        return f"{value:.3f}"
    return f"{value:.4f}"


def markdown_table(report: dict) -> str:
    """The report as a markdown section: title, stamp, one row per metric with its settings, then what is missing."""
    lines = [f"### {report['title']} (`{report['protocol']}`, {report['setting']}, {report['size']})", ""]
    if report.get("stamp"):
        lines += [f"**{report['stamp']}**", ""]
    lines += ["| metric | value | settings |", "|---|---|---|"]
    for key, value in report["metrics"].items():
        shown = _format(key, value)
        if key == "kid_x1000" and value is not None and "kid_std_x1000" in report["details"]:
            shown += f" ± {report['details']['kid_std_x1000']:.3f}"
        lines.append(f"| {key} | {shown} | {report['labels'].get(key, '')} |")
    counts = report["counts"]
    lines += ["", f"{counts['scored']} generated images scored, real set {counts['real']} images."]
    if counts.get("pairs_without_output"):
        lines.append(f"{counts['pairs_without_output']} listed pairs have no generated image.")
    for key, reason in report.get("missing", {}).items():
        lines.append(f"- `{key}` missing: {reason}")
    return "\n".join(lines) + "\n"
