"""Readers for Fashion200K (Han et al. 2017) as released.

Layout under a root folder:
    labels/{dress,jacket,pants,skirt,top}_{train,test}_detect_all.txt
                        a line per image: `path<TAB>score<TAB>caption`, the path relative to the root
                        (`women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg`), the score the detector's
                        confidence, the caption the product's short description ("black knit midi dress")
    women/...           the images
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from atelier.data.formats.text import read_text
from atelier.errors import UserError

SPLITS = ("train", "test")
LABEL_SUFFIX = "_detect_all.txt"
LINE = "path<TAB>score<TAB>caption"


@dataclass(frozen=True)
class Fashion200KItem:
    """One labelled image: its path relative to the dataset root, the detection score, the caption (stripped) and
    the category (the label file's name up to its first `_`: dress, jacket, pants, skirt, top)."""

    path: str
    score: float
    caption: str
    category: str


def read_labels(path: str | os.PathLike) -> list[Fashion200KItem]:
    """The items of one label file, in file order (blank lines skipped). UserError naming the file and line for a line
    without exactly three tab-separated fields, an image path that is empty, absolute or climbs out with `..`, a score
    that is not a finite number, or an empty caption."""
    path = Path(path)
    category = path.name.partition("_")[0]
    items = []
    for number, line in enumerate(read_text(path, f"Fashion200K label file ({LINE} per line)").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 3:
            raise UserError(f"{where}: found {len(fields)} tab-separated fields; expected 3, {LINE}")
        image, score_text, caption = fields
        parts = PurePosixPath(image.replace("\\", "/")).parts
        if not image or parts[0] == "/" or ".." in parts:
            raise UserError(f"{where}: image path {image[:80]!r} is not a path inside the dataset root; expected "
                            "one like women/dresses/.../123_0.jpeg")
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise UserError(f"{where}: score {score_text[:40]!r} is not a number; expected {LINE}")
        if not caption:
            raise UserError(f"{where}: the caption is empty; expected {LINE}")
        items.append(Fashion200KItem(image, score, caption, category))
    return items


def load_fashion200k(root: str | os.PathLike, split: str) -> list[Fashion200KItem]:
    """The items of every `labels/*_{split}_detect_all.txt` under root, the files in name order (so by category).
    UserError for a split other than train or test, and when no such label file exists."""
    if split not in SPLITS:
        raise UserError(f"Fashion200K: unknown split {split!r}; expected train or test")
    files = sorted((Path(root) / "labels").glob(f"*_{split}{LABEL_SUFFIX}"))
    if not files:
        raise UserError(f"{Path(root) / 'labels'}: no *_{split}{LABEL_SUFFIX} label files; point the root at the "
                        "Fashion200K folder that holds labels/")
    return [item for file in files for item in read_labels(file)]
