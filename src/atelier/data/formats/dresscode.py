"""Reader for DressCode (Morelli et al. 2022), the multi-category virtual try-on benchmark, as released, with MGD's
captions.

Layout under a root folder:
    upper_body/, lower_body/, dresses/     one folder per category, each holding:
        images/X_0.jpg                     the person
        images/Y_1.jpg                     the garment alone
        keypoints/X_2.json                 {"keypoints": [[x, y, score, id], ...]}: 18 OpenPose joints
        skeletons/X_5.jpg                  the drawn skeleton
        label_maps/X_4.png                 the human parsing map (the person image's size)
        dense/X_5.png                      the DensePose labels (the person image's size)
    train_pairs.txt, test_pairs_paired.txt, test_pairs_unpaired.txt
        at the root: `X_0.jpg Y_1.jpg category` per line, the category 0 (upper_body), 1 (lower_body), 2 (dresses)
        (or its name); or in a category folder: `X_0.jpg Y_1.jpg`, the category column optional
    fine_captions.json, coarse_captions.json
        MGD: {garment id (X of X_1.jpg): [noun phrases]}, at the root or in a category folder, when present

Every malformed file is one UserError naming the file (and line or field) and saying what was expected.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from atelier.data.formats.text import parse_json, read_text
from atelier.data.formats.vitonhd import check_name, check_same_size, finite_number, pair_lines, read_captions
from atelier.data.formats.vitonhd import kind as json_kind
from atelier.errors import UserError

logger = logging.getLogger(__name__)

CATEGORIES = ("upper_body", "lower_body", "dresses")  # in the order of the pairs files' category column: 0, 1, 2
PHASES = ("train", "test")
SETTINGS = ("paired", "unpaired")
JOINTS = 18
CAPTION_KINDS = ("fine", "coarse")
PAIR_LINE = "X_0.jpg Y_1.jpg category"
KEYPOINTS = '{"keypoints": [18 x [x, y, score, id]]}'
# The per-category folders and how each names a pair's file from the person's id X (X_0.jpg).
FOLDERS = {
    "images": "{id}_0.jpg",
    "garment": "{garment}",  # images/Y_1.jpg
    "keypoints": "{id}_2.json",
    "skeletons": "{id}_5.jpg",
    "label_maps": "{id}_4.png",
    "dense": "{id}_5.png",
}


@dataclass(frozen=True)
class DressCodePair:
    """One listed pair: the person's and the garment's image names (X_0.jpg, Y_1.jpg), the category, and where it
    was listed (file and line)."""

    person: str
    garment: str
    category: str
    source: str = field(default="", compare=False)

    @property
    def person_id(self) -> str:
        return self.person[: -len("_0.jpg")]

    @property
    def garment_id(self) -> str:
        return self.garment[: -len("_1.jpg")]


def pairs_name(phase: str, setting: str = "paired") -> str:
    """train_pairs.txt, test_pairs_paired.txt or test_pairs_unpaired.txt."""
    if phase not in PHASES or setting not in SETTINGS:
        raise UserError(f"DressCode: unknown phase {phase!r} or setting {setting!r}; expected a phase among "
                        f"{', '.join(PHASES)} and a setting among {', '.join(SETTINGS)}")
    return "train_pairs.txt" if phase == "train" else f"test_pairs_{setting}.txt"


def _category(value: str, where: str) -> str:
    if value in CATEGORIES:
        return value
    if value in ("0", "1", "2"):
        return CATEGORIES[int(value)]
    raise UserError(f"{where}: category {value[:20]!r}; expected 0 (upper_body), 1 (lower_body) or 2 (dresses)")


def read_pairs(path: str | os.PathLike, category: str | None = None) -> list[DressCodePair]:
    """The pairs of a DressCode pairs file, in file order, blank lines ignored. A root-level file (category None)
    needs the category column; a category folder's file (`category` given) may leave it out, and where it gives it,
    it must be that folder's. UserError naming the file and line for a wrong number of fields, a person not named
    X_0.jpg, a garment not named Y_1.jpg, or a bad category."""
    path = Path(path)
    expected = f"'{PAIR_LINE}'" if category is None else f"'X_0.jpg Y_1.jpg' (and optionally {category}'s category)"
    counts = (3,) if category is None else (2, 3)
    pairs = []
    for _, fields, where in pair_lines(path, "DressCode pairs file", counts, expected):
        person, garment = (check_name(name, where, expected) for name in fields[:2])
        if not person.endswith("_0.jpg") or len(person) == len("_0.jpg"):
            raise UserError(f"{where}: person {person!r} is not named X_0.jpg; expected {expected}")
        if not garment.endswith("_1.jpg") or len(garment) == len("_1.jpg"):
            raise UserError(f"{where}: garment {garment!r} is not named Y_1.jpg; expected {expected}")
        found = _category(fields[2], where) if len(fields) == 3 else category
        if category is not None and found != category:
            raise UserError(f"{where}: category {fields[2]!r} ({found}) in the {category} folder's pairs file; "
                            f"expected {category}'s or none")
        pairs.append(DressCodePair(person, garment, found, where))
    return pairs


def read_keypoints(path: str | os.PathLike, joints: int = JOINTS) -> np.ndarray:
    """A DressCode keypoint file as a (joints, columns) float32 array: columns x, y, then whatever the file adds
    (score and joint id in the release: (18, 4)). Every row must have the same number (2 or more) of finite numbers.
    UserError naming the file and the entry otherwise."""
    path = Path(path)
    data = parse_json(read_text(path, "DressCode keypoint JSON"), f"{path}: not valid JSON; expected {KEYPOINTS}")
    if not isinstance(data, dict) or "keypoints" not in data:
        found = f"the file holds {json_kind(data)}" if not isinstance(data, dict) else 'no "keypoints"'
        raise UserError(f"{path}: {found}; expected {KEYPOINTS}")
    rows = data["keypoints"]
    if not isinstance(rows, list) or len(rows) != joints:
        found = f"{len(rows)} joints" if isinstance(rows, list) else json_kind(rows)
        raise UserError(f'{path}: "keypoints" holds {found}; expected {joints} joints, {KEYPOINTS}')
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    table = []
    for index, row in enumerate(rows):
        where = f'{path}: "keypoints"[{index}]'
        if not isinstance(row, list) or len(row) < 2:
            found = f"{len(row)} number{'' if len(row) == 1 else 's'}" if isinstance(row, list) else json_kind(row)
            raise UserError(f"{where} is {found}; expected [x, y, score, id] (x and y at least)")
        if len(row) != width:
            raise UserError(f"{where} has {len(row)} numbers where joint 0 has {width}; expected rows of one length")
        table.append([finite_number(value, f"{where}[{column}]") for column, value in enumerate(row)])
    return np.asarray(table, dtype=np.float32)


@dataclass(frozen=True)
class DressCodeSplit:
    """The pairs of one phase and setting of DressCode, over the chosen categories (in the order listed)."""

    root: Path
    phase: str
    setting: str
    pairs: tuple[DressCodePair, ...]

    def path(self, folder: str, pair: DressCodePair) -> Path:
        """The file of `pair` in `folder` (a key of FOLDERS; "garment" is the garment image), existing or not."""
        if folder not in FOLDERS:
            raise UserError(f"DressCode: unknown folder {folder!r}; expected one of {', '.join(FOLDERS)}")
        name = FOLDERS[folder].format(id=pair.person_id, garment=pair.garment)
        return self.root / pair.category / ("images" if folder == "garment" else folder) / name

    def image(self, pair: DressCodePair) -> Path:
        return self.path("images", pair)

    def garment(self, pair: DressCodePair) -> Path:
        return self.path("garment", pair)

    def keypoints_file(self, pair: DressCodePair) -> Path:
        return self.path("keypoints", pair)

    def skeleton(self, pair: DressCodePair) -> Path:
        return self.path("skeletons", pair)

    def label_map(self, pair: DressCodePair) -> Path:
        """The human parsing map; UserError naming both files when its size is not the person image's."""
        return check_same_size(self.path("label_maps", pair), self.image(pair), "label map")

    def dense(self, pair: DressCodePair) -> Path:
        """The DensePose labels; UserError naming both files when their size is not the person image's."""
        return check_same_size(self.path("dense", pair), self.image(pair), "dense file")

    def keypoints(self, pair: DressCodePair) -> np.ndarray:
        """The (18, 2+) keypoints of the pair's person (see `read_keypoints`)."""
        return read_keypoints(self.keypoints_file(pair))

    def captions(self, kind: str = "fine") -> dict[str, list[str]]:
        """MGD's {kind}_captions.json ({garment id: [noun phrases]}): the root's, merged with any category
        folder's; UserError when the dataset has none."""
        if kind not in CAPTION_KINDS:
            raise UserError(f"DressCode: unknown caption kind {kind!r}; expected fine or coarse")
        name = f"{kind}_captions.json"
        files = [path for path in [self.root / name] + [self.root / category / name for category in CATEGORIES]
                 if path.is_file()]
        if not files:
            raise UserError(f"{self.root / name}: captions file not found (nor in a category folder); the captions "
                            "come with MGD's multimodal DressCode")
        captions: dict[str, list[str]] = {}
        for path in files:
            captions.update(read_captions(path))
        return captions

    def check(self) -> dict[tuple[str, str], Path]:
        """The first missing file of each (category, folder) over every pair, as {(category, folder): path}; empty
        when nothing is missing."""
        missing: dict[tuple[str, str], Path] = {}
        for pair in self.pairs:
            for folder in FOLDERS:
                key = (pair.category, folder)
                if key not in missing and not self.path(folder, pair).is_file():
                    missing[key] = self.path(folder, pair)
        return missing


def load_dresscode(root: str | os.PathLike, phase: str, setting: str = "paired",
                   categories: Iterable[str] = CATEGORIES, check_images: bool = True) -> DressCodeSplit:
    """The pairs of one phase (train, test) and setting (paired, unpaired; train is paired) of a DressCode root, for
    `categories`: from the root-level pairs file (whose category column picks the category) when there is one, else
    from each category folder's. With check_images, UserError naming the pairs file and line for the first pair whose
    person or garment image does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"DressCode root {root} is not a folder; pass the folder holding upper_body/, lower_body/ "
                        "and dresses/")
    categories = tuple(categories)
    for category in categories:
        if category not in CATEGORIES:
            raise UserError(f"DressCode: unknown category {category!r}; expected {', '.join(CATEGORIES)}")
    name = pairs_name(phase, setting)
    if (root / name).is_file():
        pairs = [pair for pair in read_pairs(root / name) if pair.category in categories]
    else:
        absent = [root / category / name for category in categories if not (root / category / name).is_file()]
        if absent:
            raise UserError(f"{absent[0]}: DressCode pairs file not found, nor {root / name}; expected {name} at the "
                            "root (with the category column) or in each category folder")
        pairs = [pair for category in categories for pair in read_pairs(root / category / name, category)]
    data = DressCodeSplit(root, phase, setting, tuple(pairs))
    if check_images:
        for pair in pairs:
            for what, image in (("person", data.image(pair)), ("garment", data.garment(pair))):
                if not image.is_file():
                    raise UserError(f"{pair.source}: the {what} image {image.name} does not exist in {image.parent}; "
                                    "add it or remove the line")
    logger.debug("DressCode %s %s: %d pairs", phase, setting, len(pairs))
    return data
