"""A paired test of "ours beats theirs" over the same images, so that a claim cannot pass by chance.

Given one score per image for two methods on the same images in the same order, the per-image difference d (signed
so that positive is the claimed way) is summarised three ways:
- its mean, with a 95% percentile-bootstrap interval (images resampled with replacement, a fixed seed so a report
  is reproducible);
- an exact two-sided sign test: under "neither is better" each non-zero difference is positive with probability
  1/2, so the count of positive ones is binomial. For hit / miss outcomes (0 or 1 per image) this is McNemar's
  exact test, since only the discordant images differ from zero.
The claim passes when both agree (`PairedTest.passed`): the whole interval lies on the claimed side of 0 AND the sign
test rejects "neither is better" at 5% with more wins than losses. The interval alone is too lenient with few
images (4 hits of 40 against 0 passes it, yet p=0.125). numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0
_BLOCK = 1 << 22  # indices drawn per bootstrap block, so many images do not need resamples x images memory at once


@dataclass(frozen=True)
class PairedTest:
    """The outcome of a paired test; differences are signed so that positive is the claimed way."""

    n: int  # images compared
    mean_difference: float
    interval: tuple[float, float]  # the bootstrap interval of the mean difference at `level`
    wins: int  # images with a positive difference (better the claimed way)
    losses: int  # images with a negative difference; the rest are ties
    p_value: float  # exact two-sided sign test over the non-zero differences
    level: float = LEVEL

    @property
    def passed(self) -> bool:
        """True when the whole interval is above 0 and the sign test agrees (p < 1 - level, more wins than losses)."""
        return self.interval[0] > 0 and self.p_value < 1 - self.level and self.wins > self.losses

    @property
    def ties(self) -> int:
        return self.n - self.wins - self.losses

    def as_dict(self) -> dict:
        """The numbers, for a JSON report."""
        return {"n": self.n, "mean_difference": self.mean_difference, "interval": list(self.interval),
                "level": self.level, "wins": self.wins, "losses": self.losses, "ties": self.ties,
                "p_value": self.p_value, "passed": self.passed}


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value: the probability, with each of the wins + losses non-zero differences
    positive with probability 1/2, of a split at least as uneven as the one seen (ties are left out before)."""
    total = wins + losses
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**total)  # exact integers until this one division


def bootstrap_interval(differences: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `differences` (images resampled with replacement)."""
    rng = np.random.default_rng(seed)
    count = len(differences)
    means = np.empty(resamples)
    block = max(1, _BLOCK // count)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        means[start:start + size] = differences[rng.integers(0, count, size=(size, count))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_test(ours: Sequence[float] | np.ndarray, theirs: Sequence[float] | np.ndarray, lower_is_better: bool = False,
                level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> PairedTest:
    """Test "ours is better than theirs" on per-image scores of the same images, in the same order (booleans count
    as 0/1: a hit rate's per-image hits)."""
    ours, theirs = np.asarray(ours, dtype=np.float64).ravel(), np.asarray(theirs, dtype=np.float64).ravel()
    if len(ours) != len(theirs) or not len(ours):
        raise ValueError(f"a paired test needs one score per image on both sides: got {len(ours)} and {len(theirs)}")
    if not (np.isfinite(ours).all() and np.isfinite(theirs).all()):
        raise ValueError("a paired test needs finite scores: a NaN or infinite score has no difference to test")
    differences = theirs - ours if lower_is_better else ours - theirs
    wins, losses = int((differences > 0).sum()), int((differences < 0).sum())
    return PairedTest(n=len(differences), mean_difference=float(differences.mean()),
                      interval=bootstrap_interval(differences, level, resamples, seed), wins=wins, losses=losses,
                      p_value=sign_test_p(wins, losses), level=level)
