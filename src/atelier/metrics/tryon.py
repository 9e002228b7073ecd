"""`atelier evaluate --protocol dresscode`: virtual try-on on DressCode scored as LaDI-VTON does, per category and over
all (the protocol's settings: `atelier.metrics.protocols`, "dresscode").

    from atelier.metrics.tryon import evaluate_dresscode
    report = evaluate_dresscode("runs/ladi/paired", "DressCode", setting="paired")
    report["metrics"]["fid"], report["metrics"]["fid/dresses"]  # over all, and over the dresses only

Layout read: generated `<GEN>/<category>/<X_0>.(jpg|png)` (LaDI-VTON's `image_from_pipe.py` saves
`<out>/<category>/<im_name>`); ground truth `<DressCode>/<category>/images/X_0.jpg` of the category's test persons (the
persons of `test_pairs_paired.txt`, read by atelier.data.formats.dresscode). The images pass through the same code as
the `vitonhd` protocol (`atelier.metrics.evaluate`), once per category; the "all" figures pool the categories: the mean
of SSIM/LPIPS over every image, and FID/KID of all outputs against all persons from the summed feature statistics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Literal

from atelier.data.formats.dresscode import CATEGORIES, load_dresscode
from atelier.errors import UserError
from atelier.metrics import fid as fid_lib
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
from atelier.metrics.images import list_images
from atelier.metrics.matching import Match
from atelier.metrics.protocols import LAYOUT_PROTOCOLS
from atelier.metrics.streaming import current_ranks

LAYOUT = "one folder per category (upper_body/, lower_body/, dresses/) of outputs named like their person (X_0.jpg)"


def dresscode_categories(generated: Path, requested: Iterable[str] | None) -> list[str]:
    """The categories to score: `requested` (each must have its folder under `generated`), else every category
    folder present (LaDI-VTON's `all`); UserError naming the folder otherwise."""
    if not generated.is_dir():
        raise UserError(f"--generated {generated}: not a folder; expected LaDI-VTON's DressCode layout, {LAYOUT}")
    if requested:
        requested = list(dict.fromkeys(requested))
        for category in requested:
            if category not in CATEGORIES:
                raise UserError(f"--category {category}: unknown; expected {', '.join(CATEGORIES)}")
            if not (generated / category).is_dir():
                raise UserError(f"--generated {generated / category}: category folder not found; --category {category} "
                                f"scores the outputs there ({LAYOUT})")
        return [category for category in CATEGORIES if category in requested]
    found = [category for category in CATEGORIES if (generated / category).is_dir()]
    if not found:
        raise UserError(f"--generated {generated}: none of upper_body/, lower_body/, dresses/ is there; expected "
                        f"LaDI-VTON's DressCode layout, {LAYOUT}")
    return found


def category_persons(data: Path, category: str) -> list[Path]:
    """The person images of a category's test pairs, sorted and de-duplicated; UserError naming the folder, pairs
    file or image that is missing."""
    images = data / category / "images"
    if not images.is_dir():
        raise UserError(f"--data {images}: not a folder; expected DressCode's {category}/images/ holding the test "
                        "persons (X_0.jpg)")
    pairs = load_dresscode(data, "test", "paired", [category], check_images=False).pairs
    if not pairs:
        raise UserError(f"--data {data}: test_pairs_paired.txt lists no {category} pair; nothing to compare with")
    persons = {}
    for pair in pairs:
        path = images / pair.person
        if not path.is_file():
            raise UserError(f"{pair.source}: the person image {pair.person} does not exist in {images}; the ground "
                            "truth of every listed test person is needed")
        persons.setdefault(path.stem, path)
    return sorted(persons.values())


def _outputs(folder: Path, persons: list[Path], data: Path, category: str) -> tuple[list[Match], int]:
    """Each output of a category folder with its person image (same stem), and how many persons have no output."""
    files = list_images(folder, "--generated")
    by_stem = {person.stem: person for person in persons}
    unmatched = [file.name for file in files if file.stem not in by_stem]
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
        raise UserError(f"{len(unmatched)} of {len(files)} outputs in {folder} name no {category} test person of "
                        f"{data}: {shown}; name each output like its person image (X_0.jpg or X_0.png), as LaDI-VTON "
                        "saves them")
    stems = [file.stem for file in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise UserError(f"{folder}: {len(twice)} persons have two outputs (first: {twice[0]}); keep one file per person")
    return [Match(file, by_stem[file.stem]) for file in files], len(persons) - len(files)


def _pooled(parts: list[fid_lib.FeatureStats]) -> fid_lib.FeatureStats:
    pooled = fid_lib.FeatureStats(parts[0].dim, parts[0].kid_capacity)
    for part in parts:
        pooled.merge(part)
    return pooled


def evaluate_dresscode(
    generated: str | Path,
    data: str | Path,
    *,
    setting: Literal["paired", "unpaired"] = "paired",
    categories: Iterable[str] | None = None,
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
) -> dict:
    """Score DressCode try-on outputs as LaDI-VTON does (SSIM, LPIPS paired; FID, KID x1000 in both settings), per
    category (keys `<metric>/<category>`) and over all (plain keys); returns the report dict."""
    started = time.time()
    proto = LAYOUT_PROTOCOLS["dresscode"]
    ranks = current_ranks()
    options = make_options(proto, setting, size, batch_size, device, workers, fid_method, kid_subsets, kid_subset_size,
                           kid_capacity, seed, use_cache, ranks)
    generated, data = Path(generated), Path(data)
    chosen = dresscode_categories(generated, categories)
    if not data.is_dir():
        raise UserError(f"--data {data}: not a folder; pass the DressCode root holding upper_body/, lower_body/ and "
                        "dresses/")
    paired = setting == "paired"
    inputs = {}
    for category in chosen:
        persons = category_persons(data, category)
        matches, without = _outputs(generated / category, persons, data, category)
        inputs[category] = (persons, matches, without)

    nets = build_networks(proto, setting, weights_dir, allow_random_weights, options, with_features=True)
    cache_info, summary = {}, {}
    all_rows, all_generated, all_real = [], {}, {}
    per_category = {}
    for category, (persons, matches, without) in inputs.items():
        items = matches if paired else [match.generated for match in matches]
        rows, generated_stats = score_generated(ranks.shard(items), proto, nets, options, paired)
        rows = [{**row, "name": f"{category}/{row['name']}"} for row in ranks.gather(rows)]
        generated_stats = {key: gather_stats(stats, ranks) for key, stats in generated_stats.items()}
        real_stats, cached = real_statistics(proto, persons, nets, options, ranks)
        per_category[category] = compute_metrics(proto, setting, rows, generated_stats, real_stats, nets, options)
        cache_info.update({f"{key}/{category}": info for key, info in cached.items()})
        summary[category] = {"generated": len(matches), "real": len(persons), "without_output": without}
        all_rows += rows
        for key, stats in generated_stats.items():
            all_generated.setdefault(key, []).append(stats)
        for key, stats in real_stats.items():
            all_real.setdefault(key, []).append(stats)
    pooled = ({key: _pooled(parts) for key, parts in all_generated.items()},
              {key: _pooled(parts) for key, parts in all_real.items()})
    metrics, details, missing = compute_metrics(proto, setting, all_rows, *pooled, nets, options)
    for category, (values, category_details, category_missing) in per_category.items():
        metrics.update({f"{key}/{category}": value for key, value in values.items()})
        missing.update({f"{key}/{category}": reason for key, reason in category_missing.items()})
        details.update({f"{key}/{category}": value for key, value in category_details.items() if key != "fid_method"})
    run = {"started": started,
           "inputs": {"generated": generated, "data": data, "categories": ",".join(chosen)},
           "counts": {"generated": sum(s["generated"] for s in summary.values()), "scored": len(all_rows),
                      "real": sum(s["real"] for s in summary.values()),
                      "pairs_without_output": sum(s["without_output"] for s in summary.values())},
           "categories": summary}
    report = build_report(proto, setting, options, metrics, details, missing, nets, cache_info, run)
    if per_image:
        report["per_image"] = per_image_rows(all_rows)
    return report
