"""Recall@K, the FashionIQ summary and FashionGen's 1-vs-100 protocol."""

import numpy as np
import pytest
import torch

from atelier.metrics.retrieval import fashiongen_batch_retrieval, fashiongen_retrieval, fashioniq_recall, recall_at_k


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
    with pytest.raises(ValueError, match="one shape"):
        fashiongen_batch_retrieval(images, images[:5])
