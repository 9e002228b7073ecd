"""Recall@K, the FashionIQ summary and FashionGen's 1-vs-100 protocol."""

import numpy as np
import pytest
import torch

from atelier.errors import UserError
from atelier.metrics.retrieval import (
    fashiongen_batch_retrieval,
    fashiongen_eligible,
    fashiongen_retrieval,
    fashioniq_recall,
    recall_at_k,
)


def test_recall_at_k_by_hand():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.2, 0.3]])
    # targets 0, 0, 2: ranks 0, 2, 0
    assert recall_at_k(similarity, [0, 0, 2], ks=(1, 2, 3)) == pytest.approx({"R@1": 200 / 3, "R@2": 200 / 3, "R@3": 100.0})


def test_fashioniq_summary():
    perfect = (torch.eye(60), torch.arange(60))
    rotten = (-torch.eye(60), torch.arange(60))  # every target scores below the 59 others: rank 59
    scores = fashioniq_recall({"dress": perfect, "shirt": perfect, "toptee": rotten})
    assert scores["dress"] == {"R@10": 100.0, "R@50": 100.0}
    assert scores["average"]["R@10"] == pytest.approx(200 / 3)
    assert scores["toptee"] == {"R@10": 0.0, "R@50": 0.0}
    assert scores["mean"] == pytest.approx((scores["average"]["R@10"] + scores["average"]["R@50"]) / 2)


def test_fashiongen_protocol_perfect_and_random_embeddings():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(400, 16))
    groups = np.repeat(["tops", "shoes"], 200)
    perfect = fashiongen_retrieval(embeddings, embeddings, groups, queries=50, negatives=100)
    assert perfect["mean"] == 100.0 and set(perfect) == {
        "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mean"}
    chance = fashiongen_retrieval(embeddings, rng.normal(size=(400, 16)), groups, queries=200, negatives=100)
    assert chance["i2t_R@10"] < 30  # chance level is 10 / 101


def test_fashiongen_val100_ranks_each_query_within_its_own_batch_only():
    # one-hot products; text 1 points away from image 1 (towards image 3), text 7 is closer to image 2 than to image 7
    images, texts = np.eye(12), np.eye(12)
    texts[1] = images[3] - 0.5 * images[1]
    texts[7] = images[2] + 0.5 * images[7]
    batched = fashiongen_batch_retrieval(images, texts, batch=5)  # batches 0-4, 5-9, 10-11
    assert batched["i2t_R@1"] == batched["t2i_R@1"] == pytest.approx(100 * 11 / 12)  # only product 1 misses
    assert batched["i2t_R@5"] == batched["t2i_R@5"] == 100.0  # a batch holds at most 5
    whole = fashiongen_batch_retrieval(images, texts, batch=12)  # image 2 now competes for text 7, and wins
    assert whole["t2i_R@1"] == pytest.approx(100 * 10 / 12) and whole["i2t_R@1"] == pytest.approx(100 * 11 / 12)
    assert fashiongen_batch_retrieval(images, images)["mean"] == 100.0
    with pytest.raises(ValueError, match="one N and D"):
        fashiongen_batch_retrieval(images, images[:5])


def test_query_features_score_a_pair_by_their_best_query():
    # 3 products, 2 query vectors each (BLIP-2's ITC): image i's second query points at text i, its first at text i+1
    texts = np.eye(3)
    images = np.stack([np.stack([texts[(i + 1) % 3] * 0.9, texts[i]]) for i in range(3)])
    assert fashiongen_batch_retrieval(images, texts)["mean"] == 100.0  # max over queries: 1.0 beats 0.9
    only_first = fashiongen_batch_retrieval(images[:, 0], texts)  # (N, D): the first queries alone all miss
    assert only_first["i2t_R@1"] == only_first["t2i_R@1"] == 0.0 and only_first["i2t_R@5"] == 100.0


def test_fashiongen_queries_come_only_from_large_enough_subcategories():
    rng = np.random.default_rng(1)
    groups = np.array(["tops"] * 8 + ["shoes"] * 3 + ["bags"])
    assert fashiongen_eligible(groups, negatives=4) == 8 and fashiongen_eligible(groups, negatives=2) == 11
    images = rng.normal(size=(12, 2, 8))
    texts = images[:, 1] + 0.01 * rng.normal(size=(12, 8))  # each text next to its image's second query
    scores = fashiongen_retrieval(images, texts, groups, queries=1000, negatives=2, seed=3)
    assert scores["mean"] == 100.0
    assert fashiongen_retrieval(images, texts, groups, negatives=2, seed=3) == scores  # the seed fixes the draw
    with pytest.raises(UserError, match="more than 8 products .the largest here has 8"):
        fashiongen_retrieval(images, texts, groups, negatives=8)
