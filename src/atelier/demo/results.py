"""What a demo stage returns: its numbers, pass/fail checks, pictures and settings, as data that report.py renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from atelier.metrics.paired import LEVEL, PairedTest, paired_test

# How every verdict is decided, said once in the report.
RULE = (f"Every check compares two methods image by image on the same held-out images: PASS when the {LEVEL:.0%} "
        "bootstrap interval of the mean per-image difference lies entirely on the claimed side of 0 and the sign test "
        f"agrees (p < {1 - LEVEL:.2f}, more images better than worse), FAIL otherwise. "
        "Beside each verdict: the mean difference (positive = the claimed way), its interval, the exact two-sided "
        "sign test (images better the claimed way / images that differ; McNemar's test for hit or miss) and both means.")

@dataclass
class Table:
    """A results table: rows of {column: value}; `caption` says what the numbers are and which way is better."""

    caption: str
    rows: list[dict[str, Any]]


@dataclass
class Check:
    """A claim with its verdict and margin: how far the numbers cleared (or missed) it, positive the claimed way.

    `test` holds the paired test that decided it; a check made of several (`all_of`) holds them as `parts` instead.
    """

    claim: str
    passed: bool
    margin: str = ""
    test: PairedTest | None = None
    parts: list[Check] = field(default_factory=list)

    def numbers(self) -> dict[str, Any]:
        """The verdict with its test's numbers (n, mean difference, interval, p-value), or its parts', for report.json."""
        if self.test is not None:
            return self.test.as_dict()
        return {"passed": self.passed, "parts": {part.claim: part.numbers() for part in self.parts}}


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


def paired_beats(claim: str, ours: Sequence[float], theirs: Sequence[float], lower_is_better: bool = False,
                 unit: str = "", digits: int = 4) -> Check:
    """The check "ours is better than theirs" by a paired test over the same images (metrics.paired): per-image scores
    in the same order, booleans for hit / miss. Its margin: the mean gain in the better direction, its interval, the
    sign test and both means, e.g. "+0.03 dB [+0.01, +0.05] 95% CI, sign test 78/100 p=2e-08 (ours 24.10 vs 24.07)"."""
    test = paired_test(ours, theirs, lower_is_better)
    low, high = test.interval
    ties = f" ({test.ties} ties)" if test.ties else ""
    mine, other = float(np.mean(ours)), float(np.mean(theirs))
    margin = (f"{test.mean_difference:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}] {test.level:.0%} CI, "
              f"sign test {test.wins}/{test.wins + test.losses}{ties} p={test.p_value:.2g} "
              f"(ours {mine:.{digits}f} vs {other:.{digits}f}, n={test.n})")
    return Check(claim, test.passed, margin, test)


def all_of(claim: str, parts: list[Check]) -> Check:
    """One check that passes when every part does; its margin lists the parts' claims and margins."""
    return Check(claim, all(part.passed for part in parts), _margins(parts), parts=parts)


def any_of(claim: str, parts: list[Check]) -> Check:
    """One check that passes when at least one part does; its margin lists the parts' claims and margins."""
    return Check(claim, any(part.passed for part in parts), _margins(parts), parts=parts)


def _margins(parts: list[Check]) -> str:
    return "; ".join(f"{part.claim}: {part.margin}" for part in parts)


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most `count` items evenly spaced over the list (grid rows over many identities, not 8 poses of 2)."""
    return list(items[:: max(1, len(items) // count)][:count])


def verdict(result: StageResult) -> str:
    """The stage's first line: "FAILED 2 of 5 checks: <claims>." or "PASSED all 5 checks."."""
    failed = [check.claim for check in result.checks if not check.passed]
    if failed:
        return f"FAILED {len(failed)} of {len(result.checks)} checks: {'; '.join(failed)}."
    return f"PASSED all {len(result.checks)} checks." if result.checks else "No checks."
