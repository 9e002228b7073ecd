"""Retrieval metrics: Recall@K, the FashionIQ composed-retrieval protocol and FashionGen's 1-vs-100 protocol.

- `recall_at_k`: share (in %) of queries whose target is among the K most similar gallery items.
- FashionIQ (Wu et al. 2021), as CLIP4Cir / UniFashion report it: per category (dress, shirt, toptee) on the val
  split, R@10 and R@50 of each query's target in that category's gallery; then the mean over categories of each,
  and the overall score = (mean R@10 + mean R@50) / 2.
- FashionGen cross-modal retrieval, FAME-ViL protocol: 1,000 random queries, each ranked against 101 candidates
  (its positive and 100 negatives drawn from the same sub-category), R@1/5/10 for image->text and text->image,
  and the mean of the six numbers.
- FashionGen "val100", what UniFashion's released code computes instead: the products in file order are cut into
  batches of 100 (the last one may be shorter) and each query is ranked only against its own batch (positive
  included), all categories mixed. Easier than FAME-ViL's same-sub-category negatives: label it, never compare the
  two.
"""

from __future__ import annotations

import numpy as np
import torch

from atelier.errors import UserError

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")


def recall_at_k(similarity, targets, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@K in percent from a (queries, gallery) similarity matrix and each query's target gallery index."""
    similarity = torch.as_tensor(similarity, dtype=torch.float64)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if similarity.ndim != 2 or targets.shape != (similarity.shape[0],):
        raise ValueError(f"expected a (Q, G) similarity and Q targets, got {tuple(similarity.shape)} and {tuple(targets.shape)}")
    target_scores = similarity.gather(1, targets[:, None])
    # rank = number of gallery items scored strictly higher than the target (ties count in the target's favour)
    ranks = (similarity > target_scores).sum(dim=1)
    return {f"R@{k}": float((ranks < k).double().mean() * 100) for k in ks}


def fashioniq_recall(per_category: dict[str, tuple]) -> dict:
    """FashionIQ scores from {category: (similarity (Q, G), target indices (Q,))}: per category, means, overall."""
    unknown = set(per_category) - set(FASHIONIQ_CATEGORIES)
    if unknown:
        raise UserError(f"FashionIQ categories {sorted(unknown)} unknown; expected {', '.join(FASHIONIQ_CATEGORIES)}")
    scores = {name: recall_at_k(sim, tgt, ks=(10, 50)) for name, (sim, tgt) in per_category.items()}
    mean10 = float(np.mean([s["R@10"] for s in scores.values()]))
    mean50 = float(np.mean([s["R@50"] for s in scores.values()]))
    return {**scores, "average": {"R@10": mean10, "R@50": mean50}, "mean": (mean10 + mean50) / 2}


def _embeddings(image_embeddings, text_embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float64 images (N, Q, D) (Q = 1 for (N, D) input) and texts (N, D); ValueError for other shapes."""
    images, texts = (torch.as_tensor(x, dtype=torch.float64) for x in (image_embeddings, text_embeddings))
    if texts.ndim != 2 or images.ndim not in (2, 3) or len(images) != len(texts) or images.shape[-1] != texts.shape[-1]:
        raise ValueError(f"expected image embeddings (N, D) or (N, Q, D) and text embeddings (N, D) of one N and D, got "
                         f"{tuple(images.shape)} and {tuple(texts.shape)}")
    images = images if images.ndim == 3 else images.unsqueeze(1)
    return (images / images.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            texts / texts.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def fashiongen_eligible(subcategories, negatives: int = 100) -> int:
    """How many products can be a FAME-ViL query: those whose sub-category holds more than `negatives` products (so
    `negatives` others can be drawn from it). fashiongen_retrieval scores min(queries, this) queries."""
    _, counts = np.unique(np.asarray(subcategories), return_counts=True)
    return int(counts[counts > negatives].sum())


def fashiongen_retrieval(
    image_embeddings, text_embeddings, subcategories, queries: int = 1000, negatives: int = 100, seed: int = 0,
    chunk: int = 16,
) -> dict[str, float]:
    """FashionGen 1-vs-100 retrieval (FAME-ViL protocol): R@1/5/10 image->text and text->image, and their mean.

    Image embeddings are (N, D), or (N, Q, D) for BLIP-2's query features (a pair scores the best of its Q cosines);
    text embeddings (N, D). min(queries, fashiongen_eligible(...)) queries are drawn with `seed`; UserError when no
    sub-category has more than `negatives` products."""
    images, texts = _embeddings(image_embeddings, text_embeddings)
    subcategories = np.asarray(subcategories)
    if len(subcategories) != len(images):
        raise ValueError("image embeddings, text embeddings and sub-categories must have one row per product")
    rng = np.random.default_rng(seed)
    by_group = {group: np.flatnonzero(subcategories == group) for group in np.unique(subcategories)}
    eligible = np.array([i for i in range(len(images)) if len(by_group[subcategories[i]]) > negatives])
    if len(eligible) == 0:
        largest = max((len(members) for members in by_group.values()), default=0)
        raise UserError(f"FashionGen retrieval needs a sub-category with more than {negatives} products (the largest "
                        f"here has {largest}); score a larger file")
    chosen = rng.choice(eligible, size=min(queries, len(eligible)), replace=False)
    candidates = []
    for index in chosen:
        pool = by_group[subcategories[index]]
        others = rng.choice(pool[pool != index], size=negatives, replace=False)
        candidates.append(np.concatenate([[index], others]))  # the positive is candidate 0
    candidates = torch.as_tensor(np.stack(candidates))
    query_index = torch.as_tensor(chosen)
    image_to_text, text_to_image = [], []
    for start in range(0, len(chosen), chunk):  # (chunk, 101, Q, D) at a time: 1,000 x 101 x 32 x 256 is 6 GB
        rows, cands = query_index[start : start + chunk], candidates[start : start + chunk]
        image_to_text.append(torch.einsum("bqd,bkd->bkq", images[rows], texts[cands]).amax(dim=-1))
        text_to_image.append(torch.einsum("bkqd,bd->bkq", images[cands], texts[rows]).amax(dim=-1))
    zero = torch.zeros(len(chosen), dtype=torch.long)
    result = {f"i2t_{k}": v for k, v in recall_at_k(torch.cat(image_to_text), zero).items()}
    result.update({f"t2i_{k}": v for k, v in recall_at_k(torch.cat(text_to_image), zero).items()})
    result["mean"] = float(np.mean(list(result.values())))
    return result


def fashiongen_batch_retrieval(image_embeddings, text_embeddings, batch: int = 100) -> dict[str, float]:
    """FashionGen "val100" (UniFashion's released evaluation): each product's image (text) ranked against the texts
    (images) of its own batch of `batch` consecutive products; R@1/5/10 both ways over all queries, and their mean.
    Embeddings as fashiongen_retrieval's."""
    images, texts = _embeddings(image_embeddings, text_embeddings)
    if batch < 1:
        raise ValueError(f"batch {batch}: expected >= 1")
    image_to_text, text_to_image = [], []
    for start in range(0, len(images), batch):
        similarity = torch.einsum("nqd,md->nmq", images[start : start + batch], texts[start : start + batch]).amax(-1)
        targets = torch.arange(similarity.shape[0])
        image_to_text.append((similarity > similarity.gather(1, targets[:, None])).sum(dim=1))
        text_to_image.append((similarity.T > similarity.T.gather(1, targets[:, None])).sum(dim=1))
    result = {}
    for name, ranks in (("i2t", torch.cat(image_to_text)), ("t2i", torch.cat(text_to_image))):
        result.update({f"{name}_R@{k}": float((ranks < k).double().mean() * 100) for k in (1, 5, 10)})
    result["mean"] = float(np.mean(list(result.values())))
    return result
