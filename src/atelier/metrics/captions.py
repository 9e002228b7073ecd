"""Captioning metrics in pure Python, following the coco-caption evaluation code (Chen et al. 2015).

- BLEU-1..4 (Papineni et al. 2002): corpus-level, clipped n-gram counts against the best reference, brevity penalty
  from the reference length closest to each hypothesis ("closest", coco-caption's choice), smoothing constants
  1e-15 / 1e-9 as coco-caption's BleuScorer.
- ROUGE-L (Lin 2004): LCS-based F-measure with beta = 1.2 against the best-precision / best-recall reference,
  averaged over images.
- CIDEr-D (Vedantam et al. 2015): TF-IDF weighted 1..4-gram vectors (document frequencies over the evaluated set's
  references, log(number of images) as the IDF numerator), clipped hypothesis counts, a Gaussian length penalty
  with sigma 6 on the bigram count difference, mean over n and references, times 10.
- METEOR is not approximated here: every faithful implementation needs Java (coco-caption's meteor-1.5.jar) and
  its paraphrase data; `atelier.metrics.meteor` runs that scorer when it is installed.

Tokenisation: coco-caption uses the Stanford PTB tokenizer (Java) and drops punctuation; we lowercase and keep runs
of letters and digits (with an apostrophe suffix, "n't" style splits are not reproduced). Captions that are already
tokenised and lowercased (space separated) score exactly as in coco-caption.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Mapping, Sequence

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercase and split into word tokens, dropping punctuation (an approximation of coco's PTB tokenizer)."""
    return _TOKEN.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for start in range(len(words) - k + 1):
            counts[tuple(words[start : start + k])] += 1
    return counts


def _prepare(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]):
    if set(hypotheses) != set(references):
        raise ValueError("hypotheses and references must have the same image ids")
    ids = sorted(hypotheses)
    return ids, {i: tokenize(hypotheses[i]) for i in ids}, {i: [tokenize(r) for r in references[i]] for i in ids}


def bleu(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as coco-caption (closest reference length, its smoothing constants)."""
    ids, hyps, refs = _prepare(hypotheses, references)
    small, tiny = 1e-9, 1e-15
    correct, guess = [0] * n, [0] * n
    test_length = reference_length = 0
    for i in ids:
        words = hyps[i]
        max_counts: Counter = Counter()
        for ref in refs[i]:
            for gram, count in _ngrams(ref, n).items():
                max_counts[gram] = max(max_counts[gram], count)
        test_length += len(words)
        reference_length += min((abs(len(r) - len(words)), len(r)) for r in refs[i])[1]
        for gram, count in _ngrams(words, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
        for k in range(n):
            guess[k] += max(0, len(words) - k)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_length + tiny) / (reference_length + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], beta: float = 1.2) -> float:
    """ROUGE-L F-measure (beta 1.2) as coco-caption, averaged over images."""
    ids, hyps, refs = _prepare(hypotheses, references)
    scores = []
    for i in ids:
        words = hyps[i]
        lcs = [_lcs(r, words) for r in refs[i]]
        precision = max(common / len(words) if words else 0.0 for common in lcs)
        recall = max(common / len(r) if r else 0.0 for common, r in zip(lcs, refs[i]))
        if precision and recall:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores)


def cider_d(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D as coco-caption's CiderD (corpus document frequencies, clipping, length penalty, x10)."""
    ids, hyps, refs = _prepare(hypotheses, references)
    reference_counts = {i: [_ngrams(r, n) for r in refs[i]] for i in ids}
    document_frequency: Counter = Counter()
    for i in ids:
        document_frequency.update({gram for counts in reference_counts[i] for gram in counts})
    log_images = math.log(float(len(ids)))

    def vector(counts: Counter):
        vec = [defaultdict(float) for _ in range(n)]
        norm, length = [0.0] * n, 0
        for gram, frequency in counts.items():
            k = len(gram) - 1
            vec[k][gram] = frequency * (log_images - math.log(max(1.0, document_frequency[gram])))
            norm[k] += vec[k][gram] ** 2
            length += frequency if k == 1 else 0
        return vec, [math.sqrt(x) for x in norm], length

    def similarity(hyp, ref) -> list[float]:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        values = []
        for k in range(n):
            value = sum(min(weight, vr[k][gram]) * vr[k][gram] for gram, weight in vh[k].items())
            if nh[k] != 0 and nr[k] != 0:
                value /= nh[k] * nr[k]
            values.append(value * penalty)
        return values

    scores = []
    for i in ids:
        hyp = vector(_ngrams(hyps[i], n))
        total = [0.0] * n
        for counts in reference_counts[i]:
            total = [t + s for t, s in zip(total, similarity(hyp, vector(counts)))]
        scores.append(sum(total) / n / len(refs[i]) * 10.0)
    return sum(scores) / len(scores)


def caption_scores(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D for {image id: caption} against {image id: [reference captions]}."""
    bleus = bleu(hypotheses, references)
    scores = {f"BLEU-{k + 1}": value for k, value in enumerate(bleus)}
    scores["ROUGE-L"] = rouge_l(hypotheses, references)
    scores["CIDEr-D"] = cider_d(hypotheses, references)
    return scores
