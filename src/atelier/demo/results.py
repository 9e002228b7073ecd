"""What a demo stage returns: its numbers, pass/fail checks, pictures and settings, as data that report.py renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image


@dataclass
class Table:
    """A results table: rows of {column: value}; `caption` says what the numbers are and which way is better."""

    caption: str
    rows: list[dict[str, Any]]


@dataclass
class Check:
    """A claim with its verdict and margin: how far the numbers cleared (or missed) it, positive the claimed way."""

    claim: str
    passed: bool
    margin: str = ""


@dataclass
class Figure:
    """A picture: an image file at `path`, or a grid (rows of images) that the report saves there."""

    caption: str
    path: Path
    grid: list[list[Image.Image]] | None = None
    cell: tuple[int, int] = (96, 128)  # (W, H) of each grid cell


@dataclass
class StageResult:
    """One stage's outcome; the report gives it a section and report.json its numbers."""

    task: str
    title: str
    summary: str  # one paragraph: what ran, what was measured, the verdict
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the settings behind the numbers (configs, sampling), as YAML
    notes: list[str] = field(default_factory=list)  # caveats beside the summary (e.g. metrics left out)
    timings: dict[str, float] = field(default_factory=dict)


def beats(claim: str, ours: float, theirs: float, lower_is_better: bool = False, unit: str = "", digits: int = 4) -> Check:
    """The check "ours is better than theirs" (strictly), its margin the gain in the better direction."""
    passed = ours < theirs if lower_is_better else ours > theirs
    gain = theirs - ours if lower_is_better else ours - theirs
    return Check(claim, bool(passed), f"{gain:+.{digits}f}{unit} ({ours:.{digits}f} vs {theirs:.{digits}f})")


def all_of(claim: str, parts: list[Check]) -> Check:
    """One check that passes when every part does; its margin lists the parts' claims and margins."""
    return Check(claim, all(part.passed for part in parts), "; ".join(f"{part.claim}: {part.margin}" for part in parts))


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most `count` items evenly spaced over the list (grid rows over many identities, not 8 poses of 2)."""
    return list(items[:: max(1, len(items) // count)][:count])
