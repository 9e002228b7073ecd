"""A retrieval model over a benchmark, for `atelier evaluate --protocol fashioniq | fashiongen`: features from the
model, scores from `atelier.metrics.retrieval` (pure), reports in `atelier.metrics.report`'s shape.

- `fashioniq`: per category, every triplet of the split is a composed query (reference image + "{caption 1} and
  {caption 2}", `composed_query_text`) ranked against that category's FULL gallery (its split file; the reference
  image stays in it, as CLIP4Cir and UniFashion evaluate); Recall@10/@50 per category, their means and the mean of
  both (`fashioniq_recall`).
- `fashiongen`: image and description features of every product of a FashionGen file (BLIP-2 ITC: an image keeps its
  query features, a pair scores its best query); FAME-ViL's protocol (1,000 queries, each against its positive and
  100 negatives of the same sub-category; fewer queries when fewer products qualify, counted) and, as separate keys,
  UniFashion's batch-of-100 "val100" variant (not comparable with FAME-ViL's).
Images are read as training reads them (bicubic to the model's size, CLIP normalisation).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

import torch

from atelier.errors import UserError

FASHIONIQ_SOURCE = "Wu et al. 2021 (FashionIQ); CLIP4Cir / UniFashion evaluation (val split, R@10/R@50)"
FASHIONGEN_SOURCE = "FAME-ViL (Han et al. 2023) 1-vs-100 protocol; UniFashion's released code for val100"
QUERY_RULE = '"{caption 1} and {caption 2}" (stripped of . , ? at the ends, first letter capitalised)'


def retrieval_checkpoint(path: str | os.PathLike) -> Path:
    """The folder `load_retrieval_model` reads for --checkpoint PATH: PATH when it holds retrieval.yaml or a BLIP-2
    config.json, else PATH/final of a retrieval run. UserError (one line) for anything else, naming the task of a
    training run of another task."""
    from atelier.methods.unifashion.model import MODEL_CONFIG, _is_blip2_folder
    from atelier.training.run_dir import run_task

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"--checkpoint {folder}: not a folder; expected a retrieval run (RUN or RUN/final) or a "
                        "Salesforce/blip2-itm-vit-g-layout folder")
    for candidate in (folder, folder / "final"):
        if (candidate / MODEL_CONFIG).is_file():
            return candidate
    if _is_blip2_folder(folder / "config.json"):
        return folder
    task = run_task(folder)
    if task == "retrieval":
        raise UserError(f"--checkpoint {folder}: the retrieval run has no final/{MODEL_CONFIG} yet; let training "
                        "finish (or resume it) before evaluating")
    found = f"a {task!r} training run" if task else f"no {MODEL_CONFIG}, final/ or BLIP-2 config.json in it"
    raise UserError(f"--checkpoint {folder}: {found}; expected a retrieval run (atelier train with task: retrieval) "
                    "or a Salesforce/blip2-itm-vit-g-layout folder")


def _load_model(checkpoint: Path, device: str):
    from atelier.methods.unifashion.model import load_retrieval_model

    model = load_retrieval_model(checkpoint)
    if model.tokenizer is None:
        raise UserError(f"--checkpoint {checkpoint}: the model has no tokenizer, so it cannot encode text; a BLIP-2 "
                        "folder needs its tokenizer files (tokenizer.json or vocab.txt) beside config.json")
    return model.to(device).eval()


def _pixels(images: list, model, device: str) -> torch.Tensor:
    """The model's input of PIL images: as the retrieval task trains (data.image_tensor + train.normalise)."""
    from atelier.methods.unifashion.data import image_tensor
    from atelier.methods.unifashion.train import normalise

    size = model.config.image_size
    return normalise(torch.stack([image_tensor(image, (size, size)) for image in images]).to(device))


def _texts(model, texts: list[str], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    from atelier.methods.unifashion.tokenizer import encode

    ids, mask = encode(model.tokenizer, texts, model.config.max_text_length)
    return ids.to(device), mask.to(device)


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def fashioniq_similarities(model, split, categories: Iterable[str], batch_size: int, device: str) -> dict[str, tuple]:
    """{category: (similarity (queries, gallery), target gallery indices)} of a loaded FashionIQSplit: every
    triplet's composed query against the category's whole gallery."""
    from atelier.data.formats.fashioniq import composed_query_text
    from atelier.data.transforms import open_rgb
    from atelier.methods.unifashion.model import similarity

    result = {}
    for category in categories:
        gallery, triplets = split.galleries[category], split.triplets[category]
        features = torch.cat([model.image_features(_pixels([open_rgb(split.image_path(a)) for a in chunk], model, device))
                              for chunk in _batches(gallery, batch_size)])
        rows = []
        for chunk in _batches(triplets, batch_size):
            references = _pixels([open_rgb(split.image_path(t.candidate)) for t in chunk], model, device)
            queries = model.composed_features(references, *_texts(model, [composed_query_text(t.captions) for t in chunk], device))
            rows.append(similarity(features, queries).t().cpu())
        position = {asin: index for index, asin in enumerate(gallery)}
        result[category] = (torch.cat(rows), torch.tensor([position[t.target] for t in triplets]))
    return result


def evaluate_fashioniq(checkpoint: str | os.PathLike, root: str | os.PathLike, split: str = "val",
                       categories: Iterable[str] = ("dress", "shirt", "toptee"), batch_size: int = 32,
                       device: str = "cpu") -> dict:
    """The `fashioniq` protocol's report for a retrieval checkpoint over a FashionIQ folder. Refuses (before any
    model work) a checkpoint that is not a retrieval model, a folder without the FashionIQ layout, the test split
    (no targets) and a category without triplets."""
    from atelier.data.formats.fashioniq import load_fashioniq
    from atelier.metrics.report import protocol_report
    from atelier.metrics.retrieval import fashioniq_recall

    started = time.time()
    categories = tuple(dict.fromkeys(categories))
    folder = retrieval_checkpoint(checkpoint)
    if split == "test":
        raise UserError("--split test: FashionIQ's test triplets have no targets; score the val split")
    loaded = load_fashioniq(root, split, categories)
    empty = [category for category in categories if not loaded.triplets[category]]
    if empty:
        raise UserError(f"--data {root}: no {split} triplets for {', '.join(empty)} "
                        f"(captions/cap.{empty[0]}.{split}.json is empty); leave those out with --categories")
    model = _load_model(folder, device)
    scores = fashioniq_recall(fashioniq_similarities(model, loaded, categories, batch_size, device))
    metrics, labels, counts = {}, {}, {"scored": sum(len(loaded.triplets[c]) for c in categories)}
    for category in categories:
        size = len(loaded.galleries[category])
        counts[f"{category}_queries"], counts[f"{category}_gallery"] = len(loaded.triplets[category]), size
        for k in (10, 50):
            metrics[f"{category}_R@{k}"] = scores[category][f"R@{k}"]
            labels[f"{category}_R@{k}"] = (f"Recall@{k} (%): composed query (reference image + {QUERY_RULE}) vs the "
                                           f"full {category} {split} gallery ({size} images, reference kept)")
    for k in (10, 50):
        metrics[f"average_R@{k}"] = scores["average"][f"R@{k}"]
        labels[f"average_R@{k}"] = f"mean of R@{k} over {', '.join(categories)}"
    metrics["mean"], labels["mean"] = scores["mean"], "(average R@10 + average R@50) / 2, FashionIQ's overall score"
    return protocol_report("fashioniq", "Composed image retrieval, FashionIQ", FASHIONIQ_SOURCE,
                           f"{split} split, {', '.join(categories)}", metrics, labels, counts,
                           details={"query_text": QUERY_RULE, "checkpoint": str(folder)},
                           inputs={"checkpoint": checkpoint, "data": root}, started=started, device=device)


@torch.inference_mode()
def fashiongen_features(model, file, batch_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features (N, Q, D), description features (N, D)) of every product of an open FashionGenH5, on the CPU."""
    images, texts = [], []
    for chunk in _batches(list(range(len(file))), batch_size):
        images.append(model.image_features(_pixels([file.image(i) for i in chunk], model, device)).cpu())
        texts.append(model.text_features(*_texts(model, [file.description(i) for i in chunk], device)).cpu())
    return torch.cat(images), torch.cat(texts)


def _describe(key: str) -> str:
    """"i2t_R@5" -> "Recall@5 (%), image->text"; "mean" -> the mean of the six."""
    if key == "mean":
        return "mean of the six recalls (%)"
    side, k = key.split("_R@")
    return f"Recall@{k} (%), {'image->text' if side == 'i2t' else 'text->image'}"


def evaluate_fashiongen(checkpoint: str | os.PathLike, data: str | os.PathLike, seed: int = 0, batch_size: int = 32,
                        device: str = "cpu", queries: int = 1000, negatives: int = 100) -> dict:
    """The `fashiongen` protocol's report for a retrieval checkpoint over a FashionGen HDF5 file: FAME-ViL's R@1/5/10
    both ways and their mean (min(queries, products that qualify) queries, drawn with `seed`; missing, with the
    reason, when no sub-category has more than `negatives` products), and the val100 keys. Other `queries` /
    `negatives` than 1,000 / 100 are not FAME-ViL's protocol (the labels say which were used). Refuses a checkpoint
    that is not a retrieval model and a file without images, descriptions or sub-categories, before model work."""
    from atelier.data.formats.fashiongen import FashionGenH5
    from atelier.metrics.report import protocol_report
    from atelier.metrics.retrieval import fashiongen_batch_retrieval, fashiongen_eligible, fashiongen_retrieval

    started = time.time()
    folder = retrieval_checkpoint(checkpoint)
    with FashionGenH5(data) as file:
        if len(file) == 0:
            raise UserError(f"--data {data}: the file holds no products; expected a FashionGen validation file")
        subcategories = [file.subcategory(i) for i in range(len(file))]
        file.description(0)  # a file without descriptions is refused now, not after the images
        model = _load_model(folder, device)
        image_features, text_features = fashiongen_features(model, file, batch_size, device)
    fame = f"FAME-ViL: 1 query vs its positive + {negatives} same-sub-category negatives (seed {seed})"
    metrics, labels, missing = {}, {}, {}
    keys = [f"{side}_R@{k}" for side in ("i2t", "t2i") for k in (1, 5, 10)] + ["mean"]
    eligible = fashiongen_eligible(subcategories, negatives)
    try:
        metrics.update(fashiongen_retrieval(image_features, text_features, subcategories, queries, negatives, seed))
    except UserError as error:
        missing.update({key: str(error) for key in keys})
        metrics.update({key: None for key in keys})
    val100 = "UniFashion's batch-of-100 variant (not comparable with FAME-ViL's): each query vs its own batch of 100"
    for key, value in fashiongen_batch_retrieval(image_features, text_features).items():
        metrics[f"val100_{key}"] = value
    for key in keys:
        labels[key], labels[f"val100_{key}"] = f"{_describe(key)}, {fame}", f"{_describe(key)}, {val100}"
    counts = {"scored": len(subcategories), "fame_vil_queries": min(queries, eligible), "fame_vil_candidates": negatives + 1,
              "val100_queries": len(subcategories)}
    return protocol_report("fashiongen", "Cross-modal retrieval, FashionGen", FASHIONGEN_SOURCE,
                           f"{min(queries, eligible)} x {negatives + 1} (seed {seed}) + val100", metrics, labels, counts,
                           missing=missing, details={"checkpoint": str(folder), "eligible_queries": eligible},
                           inputs={"checkpoint": checkpoint, "data": data}, started=started, device=device)
