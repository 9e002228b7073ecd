"""`atelier evaluate` as a library call: score generated images under a named paper protocol (`atelier.metrics.protocols`).

    from atelier.metrics.evaluate import evaluate
    report = evaluate("cfld", generated="runs/pose/test", ground_truth="data/test_highres", real="data/train_highres",
                      pairs="data/fasion-resize-pairs-test.csv")
    report["metrics"]  # {"ssim": ..., "ssim_256": ..., "psnr": ..., "lpips": ..., "fid": ..., "fid_pytorch_fid": ...}

Flow: match files -> build networks (missing weights make their metrics "missing" with the reason, or random with
`allow_random_weights`, which stamps the report) -> one threaded pass over the pairs (decode, protocol resize, SSIM and
PSNR in the loader threads; LPIPS and Inception features in batches on the device) -> real-set statistics from the
cache or one streamed pass -> FID / KID -> report dict (`atelier.metrics.report` renders it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from atelier import weights
from atelier.data.formats.deepfashion import read_annotations
from atelier.data.pose import FRAME_HW
from atelier.data.transforms import open_rgb
from atelier.errors import UserError
from atelier.metrics import fid as fid_lib
from atelier.metrics.face import FACE_KEYS, FaceScorer
from atelier.metrics.face import NO_MODEL as NO_FACE_MODEL
from atelier.metrics.images import clean_resize_299, list_images, parse_size
from atelier.metrics.lpips import build_lpips
from atelier.metrics.matching import Match, match_files, read_pairs
from atelier.metrics.protocols import FeatureSpec, Protocol, get_protocol, metric_label
from atelier.metrics.report import environment, json_safe
from atelier.metrics.ssim import SSIMEngine
from atelier.metrics.streaming import Ranks, batched, current_ranks, default_workers, threaded_map
from atelier.utils.progress import progress

logger = logging.getLogger(__name__)
STAMP_RANDOM = "NOT COMPARABLE: random network weights"


@dataclass
class Options:
    """Run options shared by the passes (the CLI flags)."""

    size: tuple[int, int]
    batch_size: int = 32
    device: str = "cpu"
    workers: int = 1
    fid_method: str = "sqrtm"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_capacity: int = 10_000
    seed: int = 0
    use_cache: bool = True


@dataclass
class Networks:
    """The networks a run could build, their weight provenance, and why the others are missing."""

    lpips: dict = field(default_factory=dict)  # report key -> LPIPS
    features: dict = field(default_factory=dict)  # FeatureSpec.key -> InceptionFeatureExtractor
    provenance: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    face: object = None  # atelier.metrics.face.FaceScorer when the protocol has the face score and a model is given


def build_networks(protocol: Protocol, setting: str, weights_dir, allow_random: bool, options: Options,
                    with_features: bool) -> Networks:
    nets = Networks()
    lpips_keys = protocol.lpips if setting == "paired" else {}
    for key, backbone in lpips_keys.items():
        try:
            module, provenance = build_lpips(backbone, weights_dir, allow_random, options.seed)
            nets.lpips[key] = module.to(options.device)
            nets.provenance.update(provenance)
        except weights.WeightsUnavailable as error:
            nets.missing[key] = str(error)
    for spec in protocol.features if with_features else ():
        try:
            extractor, provenance = fid_lib.build_inception(spec.network, spec.mode, weights_dir, allow_random, options.seed)
            nets.features[spec.key] = extractor.to(options.device)
            nets.provenance[spec.network] = provenance
        except weights.WeightsUnavailable as error:
            nets.missing[spec.key] = str(error)
            if spec.kid:
                nets.missing["kid_x1000"] = str(error)
    return nets


def _unit_tensor(arrays: list[np.ndarray], device: str) -> torch.Tensor:
    """Stack (3, H, W) arrays into a float batch in [0, 1] on the device (uint8 is divided by 255 there)."""
    batch = torch.from_numpy(np.stack(arrays)).to(device)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()


class _PairLoader:
    """Loads one item (a Match, or a bare generated path when unpaired) and computes SSIM/PSNR in the loader thread."""

    def __init__(self, protocol: Protocol, options: Options, paired: bool, needs_clean: bool, face=None) -> None:
        self.protocol, self.options, self.paired, self.needs_clean = protocol, options, paired, needs_clean
        self.face = face
        self.local = threading.local()

    def _engine(self, shape: tuple, integer: bool) -> SSIMEngine:
        engines = self.local.__dict__.setdefault("engines", {})
        if (shape, integer) not in engines:
            engines[(shape, integer)] = SSIMEngine(shape, list(self.protocol.ssim.values()), integer)
        return engines[(shape, integer)]

    def __call__(self, item: Match | Path) -> dict:
        path = item.generated if isinstance(item, Match) else item
        image = open_rgb(path)
        row = {"name": path.name, "generated": self.protocol.generated(image, self.options.size)}
        if self.needs_clean:
            row["clean"] = clean_resize_299(image)
        if self.paired:
            truth = self.protocol.ground_truth(open_rgb(item.ground_truth), self.options.size)
            generated = row["generated"]
            integer = generated.dtype == np.uint8 and truth.dtype == np.uint8
            row["ssim"], row["psnr"] = self._engine(generated.shape, integer)(generated, truth)
            row["ground_truth"] = truth
            if self.face is not None:
                row["face"] = self.face(generated, truth, item.ground_truth.name)
        return row


def _feature_input(spec: FeatureSpec, rows: list[dict], key: str, device: str) -> torch.Tensor:
    if spec.view == "clean299":
        return torch.from_numpy(np.stack([r["clean"] for r in rows])).to(device)
    return _unit_tensor([r[key] for r in rows], device)


def score_generated(items: list, protocol: Protocol, nets: Networks, options: Options, paired: bool):
    """One pass over this rank's generated images: per-image rows (SSIM, PSNR, LPIPS) and feature statistics."""
    specs = [s for s in protocol.features if s.key in nets.features]
    loader = _PairLoader(protocol, options, paired, any(s.view == "clean299" for s in specs), nets.face)
    stats = {s.key: fid_lib.FeatureStats(kid_capacity=options.kid_capacity if s.kid else 0, seed=options.seed)
             for s in specs}
    results = []
    stream = threaded_map(items, loader, options.workers, window=2 * options.batch_size)
    bar = progress(total=len(items), desc="generated images")
    for rows in batched(stream, options.batch_size):
        lpips_values = {}
        if paired and nets.lpips:
            generated = _unit_tensor([r["generated"] for r in rows], options.device)
            truth = _unit_tensor([r["ground_truth"] for r in rows], options.device)
            lpips_values = {k: m(generated, truth).cpu().numpy() for k, m in nets.lpips.items()}
        for spec in specs:
            stats[spec.key].add(nets.features[spec.key](_feature_input(spec, rows, "generated", options.device)))
        for index, row in enumerate(rows):
            result = {"name": row["name"]}
            if paired:
                result.update(zip(protocol.ssim, row["ssim"]))
                result["psnr"] = row["psnr"]
                result.update({k: float(v[index]) for k, v in lpips_values.items()})
                if nets.face is not None:  # None where either image gives no face
                    face = row["face"]
                    result["face_cos"], result["face_dist"] = face if face is not None else (None, None)
            results.append(result)
        bar.update(len(rows))
    bar.close()
    return results, stats


def real_statistics(protocol: Protocol, real_files: list[Path], nets: Networks, options: Options, ranks: Ranks):
    """Real-set feature statistics per FeatureSpec: from the cache when the same files were scored before."""
    specs = [s for s in protocol.features if s.key in nets.features]
    found, cache_info, paths = {}, {}, {}
    for spec in specs:
        identity = {"protocol": protocol.name, "key": spec.key, "network": nets.provenance[spec.network],
                    "mode": spec.mode, "size": list(options.size), "kid_capacity": options.kid_capacity if spec.kid else 0,
                    "seed": options.seed, "format": 1}
        paths[spec.key] = fid_lib.stats_cache_path(real_files, identity)
        if options.use_cache and fid_lib.cache_enabled() and paths[spec.key].is_file():
            found[spec.key] = fid_lib.FeatureStats.load(paths[spec.key])
            cache_info[spec.key] = f"cached: {paths[spec.key]}"
    todo = [s for s in specs if s.key not in found]
    if not todo:
        return found, cache_info

    def load(path: Path) -> dict:
        image = open_rgb(path)
        row = {}
        if any(s.view == "test_size" for s in todo):
            row["real"] = protocol.real(image, options.size)
        if any(s.view == "clean299" for s in todo):
            row["clean"] = clean_resize_299(image)
        return row

    stats = {s.key: fid_lib.FeatureStats(kid_capacity=options.kid_capacity if s.kid else 0, seed=options.seed) for s in todo}
    mine = ranks.shard(real_files)
    bar = progress(total=len(mine), desc="real images")
    for rows in batched(threaded_map(mine, load, options.workers, 2 * options.batch_size), options.batch_size):
        for spec in todo:
            stats[spec.key].add(nets.features[spec.key](_feature_input(spec, rows, "real", options.device)))
        bar.update(len(rows))
    bar.close()
    for spec in todo:
        stats[spec.key] = gather_stats(stats[spec.key], ranks)
        if ranks.is_main and options.use_cache and fid_lib.cache_enabled():
            stats[spec.key].save(paths[spec.key])
            cache_info[spec.key] = f"computed and cached: {paths[spec.key]}"
        else:
            cache_info[spec.key] = "computed (cache off)"
    return {**found, **stats}, cache_info


def gather_stats(stats: fid_lib.FeatureStats, ranks: Ranks) -> fid_lib.FeatureStats:
    if ranks.count == 1:
        return stats
    merged = fid_lib.FeatureStats(stats.dim, stats.kid_capacity)
    for part in ranks.gather([stats]):
        merged.merge(part)
    return merged


def resolve_device(device: str) -> str:
    """The device a --device flag names: auto -> cuda when visible, else cpu; UserError for cuda without CUDA or
    anything else."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is visible to torch; use --device cpu")
        return device
    raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def _feature_metrics(protocol, generated_stats, real_stats, nets, options, metrics, missing, details) -> None:
    for spec in protocol.features:
        if spec.key in nets.missing:
            continue
        fake, real = generated_stats.get(spec.key), real_stats.get(spec.key)
        if real is None or fake is None:
            continue
        if fake.count < 2 or real.count < 2:
            missing[spec.key] = f"FID needs at least 2 images per set (generated {fake.count}, real {real.count})"
            if spec.kid:
                missing["kid_x1000"] = missing[spec.key]
            continue
        metrics[spec.key] = fid_lib.frechet_distance(*real.mean_cov(), *fake.mean_cov(), method=options.fid_method)
        if spec.kid:
            mean, std = fid_lib.kernel_inception_distance(real.reservoir, fake.reservoir, options.kid_subsets,
                                                          options.kid_subset_size, options.seed)
            metrics["kid_x1000"], details["kid_std_x1000"] = mean * 1000, std * 1000
            details["kid_subset_size"] = min(options.kid_subset_size, len(real.reservoir), len(fake.reservoir))


def make_options(proto: Protocol, setting: str, size, batch_size: int, device: str, workers: int | None,
                 fid_method: str, kid_subsets: int, kid_subset_size: int, kid_capacity: int, seed: int,
                 use_cache: bool, ranks: Ranks) -> Options:
    """The run options of a protocol, after checking the setting and the batch size (UserError naming the flag)."""
    if setting not in proto.settings:
        raise UserError(f"--setting {setting}: the {proto.name} protocol has {', '.join(proto.settings)}")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected a positive number of images per batch")
    size = parse_size(size) if isinstance(size, str) else tuple(size or proto.default_size)
    return Options(size, batch_size, ranks.device(resolve_device(device)), workers or default_workers(), fid_method,
                   kid_subsets, kid_subset_size, kid_capacity, seed, use_cache)


def evaluate(
    protocol: str,
    generated: str | Path,
    ground_truth: str | Path | None = None,
    real: str | Path | None = None,
    pairs: str | Path | None = None,
    *,
    setting: Literal["paired", "unpaired"] = "paired",
    size: str | tuple[int, int] | None = None,
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
    face_model: str | Path | None = None,
    face_detector: str | Path | None = None,
    face_keypoints: str | Path | None = None,
) -> dict:
    """Score generated images under a named protocol (cfld, mcld, pidm, standard, vitonhd); returns the report dict.

    per_image: also return each image's paired scores (report["per_image"]: {"name", "ssim", "psnr", ...} per
    generated file, sorted by name), for paired tests between methods scored on the same pairs.
    face_model, face_detector, face_keypoints: the mcld protocol's face score (atelier.metrics.face): an ArcFace
    recogniser .onnx, an optional SCRFD detector .onnx, and the optional DeepFashion keypoint CSV of the ground-truth
    images (landmarks when there is no detector); without face_model the face keys are missing with the reason. The dataset-layout
    protocols have their own entry points: `atelier.metrics.tryon.evaluate_dresscode` and
    `atelier.metrics.mgd.evaluate_mgd`.
    """
    started = time.time()
    if protocol in ("dresscode", "mgd"):
        raise UserError(f"--protocol {protocol} reads a dataset layout, not two image folders: call "
                        f"atelier.metrics.{'tryon.evaluate_dresscode' if protocol == 'dresscode' else 'mgd.evaluate_mgd'}")
    proto = get_protocol(protocol)
    ranks = current_ranks()
    options = make_options(proto, setting, size, batch_size, device, workers, fid_method, kid_subsets,
                           kid_subset_size, kid_capacity, seed, use_cache, ranks)
    paired = setting == "paired"
    face = _face_scorer(proto, paired, options, face_model, face_detector, face_keypoints)
    generated_files = list_images(generated, "--generated")
    items: list = generated_files
    pairs_without_output: list = []
    if paired:
        if ground_truth is None:
            raise UserError(f"--ground-truth is required for the {proto.name} protocol's paired metrics")
        matched = match_files(generated_files, list_images(ground_truth, "--ground-truth"),
                              read_pairs(pairs) if pairs else None)
        items, pairs_without_output = matched.matches, matched.pairs_without_output
    real_dir = real if real is not None else (ground_truth if proto.real_default == "ground_truth" else None)
    real_files = list_images(real_dir, "--real") if real_dir is not None else []

    nets = build_networks(proto, setting, weights_dir, allow_random_weights, options, with_features=real_dir is not None)
    nets.face = face
    if proto.face and paired and face is None:
        nets.missing.update({key: NO_FACE_MODEL for key in FACE_KEYS})
    elif face is not None:
        nets.provenance["face_model"] = str(face.path)
    if real_dir is None:
        for spec in proto.features:
            nets.missing.setdefault(spec.key, f"the {proto.name} protocol's {spec.key} compares with the training set: "
                                              "pass --real DIR (e.g. train_highres/)")
            if spec.kid:
                nets.missing.setdefault("kid_x1000", nets.missing[spec.key])
    rows, generated_stats = score_generated(ranks.shard(items), proto, nets, options, paired)
    rows = ranks.gather(rows)
    generated_stats = {k: gather_stats(v, ranks) for k, v in generated_stats.items()}
    real_stats, cache_info = ({}, {}) if real_dir is None else real_statistics(proto, real_files, nets, options, ranks)

    metrics, details, missing = compute_metrics(proto, setting, rows, generated_stats, real_stats, nets, options)
    run = {"started": started,
           "inputs": {"generated": generated, "ground_truth": ground_truth, "real": real_dir, "pairs": pairs},
           "counts": {"generated": len(generated_files), "scored": len(rows), "real": len(real_files),
                      "pairs_without_output": len(pairs_without_output)},
           "pairs_without_output": [f"{a} -> {b}" for a, b in pairs_without_output[:20]]}
    report = build_report(proto, setting, options, metrics, details, missing, nets, cache_info, run)
    if per_image:
        report["per_image"] = per_image_rows(rows)
    return report


def _face_scorer(proto: Protocol, paired: bool, options: Options, model, detector, keypoints) -> FaceScorer | None:
    """The mcld protocol's face scorer (None without a model); UserError for face flags given to another protocol
    or setting, and for a detector or keypoints without a model."""
    given = [flag for flag, value in (("--face-model", model), ("--face-detector", detector),
                                       ("--face-keypoints", keypoints)) if value is not None]
    if given and not (proto.face and paired):
        raise UserError(f"{given[0]}: only the mcld protocol's paired setting has the face score, not {proto.name}")
    if model is None:
        if given:
            raise UserError(f"{given[0]}: the face score needs --face-model FILE.onnx (an ArcFace recogniser)")
        return None
    points = read_annotations(keypoints) if keypoints is not None else None
    scale = (options.size[0] / FRAME_HW[0], options.size[1] / FRAME_HW[1])
    return FaceScorer(model, detector, points, scale)


def per_image_rows(rows: list[dict]) -> list[dict]:
    """Each image's scores as JSON-safe rows sorted by name (the report's per_image entry)."""
    return json_safe(sorted(({k: float(v) if k != "name" and v is not None else v for k, v in row.items()} for row in rows),
                            key=lambda row: row["name"]))


def compute_metrics(proto: Protocol, setting: str, rows, generated_stats, real_stats, nets: Networks,
                    options: Options) -> tuple[dict, dict, dict]:
    """Means of the per-image metrics, then FID/KID: (metrics, details, missing). Metrics that could not be computed
    stay None, with their reason in `missing` (a network without weights, or too few images)."""
    keys = proto.metric_keys(setting)
    metrics: dict = {key: None for key in keys}
    details: dict = {"fid_method": options.fid_method}
    for key in keys:
        values = [row[key] for row in rows if row.get(key) is not None]
        if values:
            metrics[key] = float(np.mean(values))
    missing: dict = {}
    if "face_pairs" in metrics and nets.face is not None:
        metrics["face_pairs"] = sum(row.get("face_cos") is not None for row in rows)
        for key in ("face_cos", "face_dist"):
            if metrics[key] is None:
                missing[key] = (f"no pair gave a face in both images ({len(rows)} pairs"
                                + (", landmarks from the detector)" if nets.face.detector is not None else
                                   ", landmarks from --face-keypoints; pass --face-detector to detect faces)"))
    _feature_metrics(proto, generated_stats, real_stats, nets, options, metrics, missing, details)
    missing = {key: missing.get(key) or nets.missing.get(key, "not computed")
               for key, value in metrics.items() if value is None}
    return metrics, details, missing


def build_report(proto: Protocol, setting: str, options: Options, metrics: dict, details: dict, missing: dict,
                 nets: Networks, cache_info: dict, run: dict, labels: dict | None = None) -> dict:
    """Assemble the JSON-safe report dict (see atelier.metrics.report for its markdown form). `run` holds "started",
    "inputs" (flag -> path or None), "counts" and optionally "pairs_without_output" and "categories"."""
    size = options.size
    stamp = STAMP_RANDOM if any("RANDOM" in v for v in nets.provenance.values()) else None
    report = {
        "protocol": proto.name,
        "title": proto.title,
        "source": proto.source,
        "setting": setting,
        "size": f"{size[0]}x{size[1]}",
        "stamp": stamp,
        "metrics": metrics,
        "missing": missing,
        "labels": labels if labels is not None else {key: metric_label(proto, key) for key in metrics},
        "details": details,
        "counts": run["counts"],
        "pairs_without_output": run.get("pairs_without_output", []),
        "weights": nets.provenance,
        "real_statistics": cache_info,
        "inputs": {key: (str(value) if value is not None else None) for key, value in run["inputs"].items()},
        "environment": environment(options.device),
        "seconds": round(time.time() - run["started"], 2),
    }
    if "categories" in run:
        report["categories"] = run["categories"]
    return json_safe(report)
