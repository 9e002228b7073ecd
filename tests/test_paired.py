"""The paired test behind every demo verdict (atelier.metrics.paired, demo.results.paired_beats): a real shift passes
with an interval clear of 0, equal or nearly equal methods fail, the sign test's p-value is the exact binomial one."""

import math

import numpy as np
import pytest

from atelier.demo.results import StageResult, all_of, paired_beats, verdict
from atelier.metrics.paired import bootstrap_interval, paired_test, sign_test_p


def _scores(count=100, seed=0):
    return np.random.default_rng(seed).normal(24.0, 1.0, count)


def test_a_known_positive_shift_passes_with_the_interval_clear_of_zero():
    theirs = _scores()
    ours = theirs + 0.05 + np.random.default_rng(1).normal(0, 0.05, len(theirs))  # +0.05 dB, noisy per image
    test = paired_test(ours, theirs)
    low, high = test.interval
    assert test.passed and 0 < low < test.mean_difference < high
    assert test.mean_difference == pytest.approx(float((ours - theirs).mean()))
    assert test.n == 100 and test.wins + test.losses == 100 and test.wins > 80 and test.p_value < 1e-6


def test_identical_scores_fail():
    scores = _scores()
    test = paired_test(scores, scores.copy())
    assert not test.passed and test.interval == (0.0, 0.0) and test.mean_difference == 0
    assert (test.wins, test.losses, test.ties, test.p_value) == (0, 0, 100, 1.0)


def test_four_hits_in_forty_against_three_fails():
    """The issue's example: a 10% vs 7.5% hit rate over 40 images, which a bare comparison of means passed; it fails
    however the hits fall (nested: one discordant image; disjoint: seven)."""
    ours = np.zeros(40, dtype=bool)
    ours[:4] = True
    for their_hits, split in (([0, 1, 2], (1, 0)), ([4, 5, 6], (4, 3))):
        theirs = np.zeros(40, dtype=bool)
        theirs[their_hits] = True
        test = paired_test(ours, theirs)
        assert test.mean_difference == pytest.approx(0.025) and not test.passed and test.interval[0] <= 0
        assert (test.wins, test.losses, test.p_value) == (*split, 1.0)  # McNemar: only discordant images count
    check = paired_beats("hit rate above the baseline", ours, theirs, digits=3)
    assert not check.passed and check.test == test
    assert check.margin.startswith("+0.025 [")
    assert check.margin.endswith("95% CI, sign test 4/7 (33 ties) p=1 (ours 0.100 vs 0.075, n=40)")


def test_lower_is_better_flips_the_sign():
    theirs = _scores()
    ours = theirs - 0.5  # a loss half a unit lower on every image
    assert not paired_test(ours, theirs).passed and paired_test(ours, theirs).mean_difference == pytest.approx(-0.5)
    lower = paired_test(ours, theirs, lower_is_better=True)
    assert lower.passed and lower.mean_difference == pytest.approx(0.5) and (lower.wins, lower.losses) == (100, 0)
    assert paired_beats("lower loss", ours, theirs, lower_is_better=True).margin.startswith("+0.5000 [+0.5000, +0.5000]")


def test_the_sign_test_is_the_exact_binomial():
    # 8 wins and 2 losses: P(X <= 2) for X ~ Binomial(10, 1/2) is (1 + 10 + 45) / 1024, doubled for two sides
    assert sign_test_p(8, 2) == pytest.approx(2 * 56 / 1024)
    assert sign_test_p(2, 8) == sign_test_p(8, 2)
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(20, 0) == pytest.approx(2 / 2**20)
    assert sign_test_p(600, 400) == pytest.approx(2 * sum(math.comb(1000, k) for k in range(401)) / 2**1000)
    ours = np.array([3.0] * 8 + [1.0] * 2 + [2.0] * 5)  # against 2.0: 8 higher, 2 lower, 5 ties left out
    assert paired_test(ours, np.full(15, 2.0)).p_value == pytest.approx(2 * 56 / 1024)


def test_the_bootstrap_is_seeded_and_covers_the_mean():
    differences = np.random.default_rng(3).normal(0.2, 1.0, 400)
    first, again = bootstrap_interval(differences), bootstrap_interval(differences)
    assert first == again  # a fixed seed: the report's interval does not move between runs
    standard_error = differences.std(ddof=1) / math.sqrt(len(differences))
    width = first[1] - first[0]
    assert first[0] < differences.mean() < first[1] and width == pytest.approx(2 * 1.96 * standard_error, rel=0.1)
    many = np.random.default_rng(4).normal(0.0, 1.0, 5000)  # more images than one bootstrap block holds
    low, high = bootstrap_interval(many)
    assert low < many.mean() < high and high - low == pytest.approx(2 * 1.96 / math.sqrt(5000), rel=0.1)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="one score per image on both sides: got 3 and 2"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        paired_test([1.0, float("nan")], [1.0, 2.0])


def test_all_of_passes_only_when_every_part_does_and_a_failing_stage_says_so_first():
    theirs = _scores()
    good, bad = paired_beats("higher", theirs + 1, theirs), paired_beats("equal", theirs, theirs)
    assert all_of("both", [good, good]).passed and not all_of("both", [good, bad]).passed
    combined = all_of("both", [good, bad])
    numbers = combined.numbers()
    assert numbers["passed"] is False and numbers["parts"]["higher"]["passed"] is True
    assert numbers["parts"]["higher"]["n"] == 100 and numbers["parts"]["equal"]["p_value"] == 1.0
    stage = StageResult("t", "title", "summary", checks=[combined, good])
    assert verdict(stage) == "FAILED 1 of 2 checks: both."
    assert verdict(StageResult("t", "title", "summary", checks=[good])) == "PASSED all 1 checks."
