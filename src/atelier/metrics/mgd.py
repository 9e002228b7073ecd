"""`atelier evaluate --protocol mgd`: multimodal garment design scored as MGD (Baldrati et al., ICCV 2023) reports it
(the protocol's settings and what is our reading: `atelier.metrics.protocols`, "mgd"; the metric math:
`atelier.metrics.garment`).

    from atelier.metrics.mgd import evaluate_mgd
    report = evaluate_mgd("out/mgd_paired/images", "VITON-HD", clip="clip-vit-large-patch14")
    report["metrics"]  # fid, kid_x1000, clip_score, pose_distance, ..., sketch_distance_xdog

The inputs of each output (caption, sketch, input pose) are read by `atelier.metrics.garment_data`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch

from atelier.data.transforms import open_rgb
from atelier.errors import UserError
from atelier.metrics import garment
from atelier.metrics.evaluate import (
    build_networks,
    build_report,
    compute_metrics,
    gather_stats,
    make_options,
    per_image_rows,
    real_statistics,
    score_generated,
)
from atelier.metrics.garment_data import (
    GarmentData,
    GarmentSample,
    captions_for,
    check_sketches,
    given_keypoints,
    match_outputs,
    read_captions,
    read_garment_data,
    reference_keypoints,
)
from atelier.metrics.images import list_images
from atelier.metrics.protocols import LAYOUT_PROTOCOLS, MGD_KEYS
from atelier.metrics.streaming import batched, current_ranks, threaded_map
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class Tools:
    """What the garment pass can compute: each model or input, or the reason a metric is absent."""

    clip: garment.ClipScorer | None = None
    captions: list[str] | None = None
    pose: object | None = None
    sketch_model: object | None = None
    keypoints: Path | None = None
    sketches: bool = True
    missing: dict[str, str] = field(default_factory=dict)


def _load(item: tuple[Path, GarmentSample, int], tools: Tools) -> dict:
    output, sample, index = item
    image = open_rgb(output)
    row = {"name": output.name, "index": index, "image": image, "frame": garment.to_frame(image)}
    if tools.sketches:
        row["sketch"] = garment.read_sketch(sample.sketch)
    if tools.pose is not None or tools.keypoints is not None:
        row["reference"] = reference_keypoints(sample)
    if tools.keypoints is not None:
        row["given"] = given_keypoints(tools.keypoints, output, image.size)
    return row


def _score_batch(rows: list[dict], tools: Tools) -> list[dict]:
    """The per-image garment metrics of one batch of loaded outputs."""
    results = [{"name": row["name"]} for row in rows]
    if tools.sketches:
        for result, row, lines in zip(results, rows, garment.xdog_lines([row["frame"] for row in rows])):
            value = garment.sketch_distance(lines, row["sketch"])
            if value is not None:
                result["sketch_distance_xdog"] = value
            if tools.sketch_model is not None:
                value = garment.sketch_distance(garment.edge_lines(tools.sketch_model(row["frame"])), row["sketch"])
                if value is not None:
                    result["sketch_distance"] = value
    for result, row in zip(results, rows):
        if tools.pose is not None:
            found = tools.pose(np.asarray(row["image"]))
            distance = garment.keypoint_distance(garment.in_frame(found, row["image"].size), found[:, 2] > 0,
                                                 *row["reference"])
            if distance is not None:
                result["pose_distance"] = distance[0]
        if tools.keypoints is not None:
            distance = garment.keypoint_distance(*row["given"], *row["reference"])
            if distance is not None:
                result["pose_distance_keypoints"] = distance[0]
    if tools.clip is not None:
        pixels = torch.from_numpy(np.stack([tools.clip.pixels(row["image"]) for row in rows]))
        scores = tools.clip.scores(pixels, [tools.captions[row["index"]] for row in rows])
        for result, score in zip(results, scores):
            result["clip_score"] = float(score)
    return results


def _garment_rows(items: list, tools: Tools, batch_size: int, workers: int) -> list[dict]:
    results = []
    bar = progress(total=len(items), desc="garment metrics")
    for rows in batched(threaded_map(items, lambda item: _load(item, tools), workers, 2 * batch_size), batch_size):
        results += _score_batch(rows, tools)
        bar.update(len(rows))
    bar.close()
    return results


def _tools(matches, data: GarmentData, captions, keypoints, clip, pose_model, sketch_model, device, provenance) -> Tools:
    """Load what was asked for (UserError naming the flag for a bad file); absent metrics get their reason."""
    tools = Tools()
    if clip is None:
        tools.missing["clip_score"] = ("pass --clip DIR, a transformers CLIP folder (torchmetrics' default CLIP-S model "
                                       "is openai/clip-vit-large-patch14)")
    else:
        text, source = read_captions(data, captions)
        tools.captions = captions_for(matches, text, source)
        tools.clip = garment.load_clip(clip, device)
        provenance["clip"] = str(clip)
    if pose_model is None:
        tools.missing["pose_distance"] = "pass --pose-model FILE: OpenPose's body_pose_model.pth (or an ONNX export)"
    else:
        tools.pose, source, reason = garment.load_pose_model(pose_model, device)
        if reason:
            tools.missing["pose_distance"] = reason
        else:
            provenance["pose_model"] = source
    if keypoints is None:
        tools.missing["pose_distance_keypoints"] = ("pass --keypoints DIR: OpenPose JSON of each output "
                                                    "(<output stem>_keypoints.json)")
    elif not Path(keypoints).is_dir():
        raise UserError(f"--keypoints {keypoints}: not a folder; expected OpenPose JSON files of the outputs")
    else:
        tools.keypoints = Path(keypoints)
    if sketch_model is None:
        tools.missing["sketch_distance"] = "pass --sketch-model FILE.onnx: PiDiNet exported to ONNX"
    else:
        tools.sketch_model, source, reason = garment.load_sketch_model(sketch_model)
        if reason:
            tools.missing["sketch_distance"] = reason
        else:
            provenance["sketch_model"] = source
    reason = check_sketches(matches, data)
    if reason:
        tools.sketches = False
        tools.sketch_model = None
        for key in ("sketch_distance", "sketch_distance_xdog"):
            tools.missing.setdefault(key, reason)
    return tools


def _garment_metrics(rows: list[dict], tools: Tools, metrics: dict, missing: dict, details: dict) -> None:
    """Means over the outputs that have each metric (clip_score: torchmetrics' max(mean, 0)); reasons otherwise."""
    for key in MGD_KEYS:
        values = [row[key] for row in rows if key in row]
        details[f"images_with_{key}"] = len(values)
        if key in tools.missing:
            metrics[key], missing[key] = None, tools.missing[key]
        elif not values:
            metrics[key], missing[key] = None, ("no output had a joint present in both sets" if "pose" in key
                                                else "no input sketch had a line")
        else:
            metrics[key] = garment.clip_score(values) if key == "clip_score" else float(np.mean(values))


def evaluate_mgd(
    generated: str | Path,
    data: str | Path,
    *,
    setting: Literal["paired", "unpaired"] = "paired",
    categories: Iterable[str] | None = None,
    captions: str | Path | None = None,
    sketches: str | Path | None = None,
    keypoints: str | Path | None = None,
    clip: str | Path | None = None,
    pose_model: str | Path | None = None,
    sketch_model: str | Path | None = None,
    real: str | Path | None = None,
    weights_dir: str | Path | None = None,
    allow_random_weights: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    fid_method: Literal["sqrtm", "eigh"] = "sqrtm",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_capacity: int = 10_000,
    seed: int = 0,
    use_cache: bool = True,
    per_image: bool = False,
) -> dict:
    """Score MGD outputs: FID, KID x1000, CLIP score, pose and sketch distances (MGD's, where the models are given) and
    their weight-free variants; returns the report dict."""
    started = time.time()
    proto = LAYOUT_PROTOCOLS["mgd"]
    ranks = current_ranks()
    options = make_options(proto, setting, None, batch_size, device, workers, fid_method, kid_subsets, kid_subset_size,
                           kid_capacity, seed, use_cache, ranks)
    dataset = read_garment_data(data, setting, categories, sketches)
    matches, without = match_outputs(generated, dataset)
    if real is not None:
        real_files = list_images(real, "--real")
    else:
        real_files = sorted({sample.image for sample in dataset.samples})
        absent = next((sample for sample in dataset.samples if not sample.image.is_file()), None)
        if absent is not None:
            raise UserError(f"{absent.source}: the person image {absent.image} does not exist; the real set is every "
                            "listed person (or pass --real DIR)")
    provenance: dict[str, str] = {}
    tools = _tools(matches, dataset, captions, keypoints, clip, pose_model, sketch_model, options.device, provenance)
    nets = build_networks(proto, setting, weights_dir, allow_random_weights, options, with_features=True)
    nets.provenance.update(provenance)

    outputs = [file for file, _ in matches]
    _, generated_stats = score_generated(ranks.shard(outputs), proto, nets, options, paired=False)
    generated_stats = {key: gather_stats(stats, ranks) for key, stats in generated_stats.items()}
    real_stats, cache_info = real_statistics(proto, real_files, nets, options, ranks)
    metrics, details, missing = compute_metrics(proto, setting, [], generated_stats, real_stats, nets, options)
    items = [(file, sample, index) for index, (file, sample) in enumerate(matches)]
    rows = ranks.gather(_garment_rows(ranks.shard(items), tools, options.batch_size, options.workers))
    _garment_metrics(rows, tools, metrics, missing, details)
    run = {"started": started,
           "inputs": {"generated": generated, "data": data, "real": real, "captions": captions, "sketches": sketches,
                      "keypoints": keypoints, "clip": clip, "pose_model": pose_model, "sketch_model": sketch_model},
           "counts": {"generated": len(matches), "scored": len(rows), "real": len(real_files),
                      "pairs_without_output": without}}
    report = build_report(proto, setting, options, metrics, details, missing, nets, cache_info, run)
    report["dataset"] = {"kind": dataset.kind, "categories": list(dataset.categories)}
    if per_image:
        report["per_image"] = per_image_rows(rows)
    return report

