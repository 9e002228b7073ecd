"""BLEU, ROUGE-L and CIDEr-D on tiny examples computed by hand."""

import math

import pytest

from atelier.metrics.captions import bleu, caption_scores, cider_d, rouge_l, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A red Dress, with 2 pockets!") == ["a", "red", "dress", "with", "2", "pockets"]


def test_bleu_by_hand():
    exact = bleu({"1": "a b c d"}, {"1": ["a b c d"]})
    assert all(abs(s - 1) < 1e-8 for s in exact)
    partial = bleu({"1": "a b c x"}, {"1": ["a b c d", "q r"]})
    # p1 = 3/4, p2 = 2/3, p3 = 1/2; the closest reference has the same length, so no brevity penalty
    assert partial[0] == pytest.approx(0.75, abs=1e-8)
    assert partial[1] == pytest.approx(math.sqrt(0.75 * 2 / 3), abs=1e-8)
    assert partial[2] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3), abs=1e-8)
    assert partial[3] < 1e-3  # no 4-gram matches: only the 1e-15 smoothing remains
    short = bleu({"1": "a b"}, {"1": ["a b c d"]})
    assert short[1] == pytest.approx(math.exp(1 - 4 / 2), abs=1e-8)  # brevity penalty e^(1 - r/c)


def test_rouge_l_by_hand():
    # LCS("a b c x", "a b c d") = 3: precision = recall = 3/4, so F = 3/4 whatever beta
    assert rouge_l({"1": "a b c x"}, {"1": ["a b c d"]}) == pytest.approx(0.75)
    # precision 2/2, recall 2/4: F = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1)
    assert rouge_l({"1": "a b"}, {"1": ["a b c d"]}) == pytest.approx(2.44 * 0.5 / 1.94)


def test_cider_d_by_hand():
    references = {"A": ["a b"], "B": ["c d"]}
    # every n-gram occurs in one image's references: weight tf * (log 2 - log 1); identical captions give cosine 1
    # for unigrams and bigrams, 0 for the empty 3- and 4-gram vectors: mean 0.5, times 10
    assert cider_d({"A": "a b", "B": "c d"}, references) == pytest.approx(5.0)
    # "a x" vs "a b": unigram cosine (log2 * log2) / (sqrt2 log2)^2 = 1/2, no bigram match, same length:
    # image A scores 10 * 0.5 / 4 = 1.25, image B 5.0
    assert cider_d({"A": "a x", "B": "c d"}, references) == pytest.approx((1.25 + 5.0) / 2)
    # a length difference of 6 bigrams costs exp(-36 / 72) on every n
    long = "c d " + " ".join(f"w{i}" for i in range(6))
    assert cider_d({"A": "a b", "B": long}, references) < 5.0


def test_caption_scores_keys():
    scores = caption_scores({"1": "a red dress"}, {"1": ["a red dress", "red gown"]})
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
