"""Match generated images to their ground truth by file name, including the naming conventions of released results.

Accepted names for the output of the pair (from = source image, to = target image), stems without extension:

- `<to>.png` - same stem as the ground-truth file (also when the ground truth itself is named like the output,
  as in MCLD's `results/gt/256/`);
- `<from>_2_<to>.png` - MCLD (`combined_image_name` in its dataset) and, by our reading, the CFLD authors'
  re-organised release of several methods' outputs ("the same naming format" as MCLD);
- `<from>_2_<to>_vis.png` - PIDM (`get_image_path` in `data/fashion_data.py`);
- `<from>.jpg___<to>.jpg_vis.png` - GFLA / DPTN releases (the split PIDM's metric script undoes);
- `<from>_to_<to>.png` - a common ad-hoc convention (our assumption, not found in a released codebase).

With `--pairs CSV` (header `from,to`, the DeepFashion `fasion-resize-pairs-test.csv`) a name must also be one of the
listed pairs, and pairs without an output are reported. Every generated file must match: the unmatched ones are
listed in one error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from atelier.errors import UserError
from atelier.metrics.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)
SEPARATORS = ("___", "_2_", "_to_")


@dataclass(frozen=True)
class Match:
    """One generated image and its ground truth (source stem when the name carries it)."""

    generated: Path
    ground_truth: Path
    source: str | None = None


@dataclass
class MatchResult:
    """All matches, plus the listed pairs that have no generated image (only with --pairs)."""

    matches: list[Match]
    pairs_without_output: list[tuple[str, str]] = field(default_factory=list)


def _stem(name: str) -> str:
    """File name without directory and image extension (repeatable: 'a.jpg' -> 'a')."""
    name = os.path.basename(name.strip())
    while os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        name = os.path.splitext(name)[0]
    return name


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """A pairs CSV (header `from,to`; the one reader, data.formats.deepfashion.read_pairs) as (from_stem, to_stem)."""
    from atelier.data.formats.deepfashion import read_pairs as read_pair_names

    return [(_stem(source), _stem(target)) for source, target in read_pair_names(path)]


def candidate_names(stem: str) -> list[tuple[str | None, str]]:
    """Every (source, target) reading of a generated stem, most specific first."""
    readings: list[tuple[str | None, str]] = [(None, stem)]
    base = stem[: -len("_vis")] if stem.endswith("_vis") else stem
    for separator in SEPARATORS:
        start = base.find(separator)
        while start > 0:
            readings.append((_stem(base[:start]), _stem(base[start + len(separator) :])))
            start = base.find(separator, start + 1)
    return readings


def match_files(
    generated: list[Path], ground_truth: list[Path], pairs: list[tuple[str, str]] | None = None, gt_flag: str = "--ground-truth"
) -> MatchResult:
    """Pair every generated file with a ground-truth file by name; one UserError lists all that do not match."""
    by_stem = {_stem(p.name): p for p in ground_truth}
    allowed = set(pairs) if pairs is not None else None
    targets = {to for _, to in pairs} if pairs is not None else set()
    matches, unmatched, used = [], [], set()
    for path in generated:
        found = None
        for source, target in candidate_names(_stem(path.name)):
            if target not in by_stem:
                continue
            if allowed is not None and not ((source, target) in allowed or (source is None and target in targets)):
                continue
            found = Match(path, by_stem[target], source)
            used.add((source, target))
            break
        if found is None:
            unmatched.append(path.name)
        else:
            matches.append(found)
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
        scope = " and the --pairs list" if pairs is not None else ""
        raise UserError(
            f"{len(unmatched)} of {len(generated)} generated images match no ground-truth image in {gt_flag}{scope}: "
            f"{shown}. Name each output like its target (<to>.png), or <from>_2_<to>.png, <from>_2_<to>_vis.png "
            f"(PIDM), <from>.jpg___<to>.jpg_vis.png (GFLA), <from>_to_<to>.png, and pass --pairs CSV (header from,to) "
            "when names carry the source"
        )
    missing = []
    if pairs is not None:
        matched_targets = {to for source, to in used if source is None}
        missing = [pair for pair in pairs if pair not in used and pair[1] not in matched_targets]
        if missing:
            logger.warning("%d of %d listed pairs have no generated image (first: %s -> %s)",
                           len(missing), len(pairs), *missing[0])
    return MatchResult(matches, missing)
