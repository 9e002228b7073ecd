"""Readers for DeepFashion In-shop as laid out by the pose-guided synthesis papers (PATN, PIDM, CFLD).

Layout under a root folder (docs/data-formats.md):
    train_highres/, test_highres/          images with flattened names (see flatten_name)
    train.lst, test.lst                    one image name per line
    fasion-resize-pairs-{train,test}.csv   header `from,to` (the historical spelling "fasion"; "fashion" accepted too)
    fasion-resize-annotation-{train,test}.csv
                                           separator `:`, header `name:keypoints_y:keypoints_x`, each value a JSON
                                           list of 18 ints in the 256x176 frame, -1 for a missing joint
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from atelier.data.formats.captioned import list_images
from atelier.data.formats.lists import missing_error, read_list
from atelier.data.formats.text import parse_json, text_lines
from atelier.data.pose import FRAME_HW, validate_keypoints
from atelier.errors import UserError

logger = logging.getLogger(__name__)

PAIRS_HEADER = ["from", "to"]
ANNOTATION_HEADER = ["name", "keypoints_y", "keypoints_x"]
NUM_KEYPOINTS = 18
IMAGE_FOLDERS = ("{split}_highres", "{split}_256x176")


def flatten_name(rel_path: str) -> str:
    """DeepFashion relative path -> the flat file name the pose-transfer papers use.

    Rule: drop every '/'; in the identity folder (`id_00000693`) drop the '_'; in the file name keep the first '_'
    (between pose index and view number) and drop the others; other folders (e.g. `Blouses_Shirts`) stay as they are.
    `fashion/WOMEN/Blouses_Shirts/id_00000693/02_3_back.jpg` -> `fashionWOMENBlouses_Shirtsid0000069302_3back.jpg`.
    """
    parts = rel_path.replace("\\", "/").strip("/").split("/")
    if len(parts) < 2:
        raise UserError(
            f"flatten_name: expected a relative path like fashion/WOMEN/Dresses/id_00000012/01_1_front.jpg; got {rel_path!r}"
        )
    *folders, file_name = parts
    folders = [folder.replace("_", "") if folder.startswith("id_") else folder for folder in folders]
    head, separator, tail = file_name.partition("_")
    return "".join(folders) + head + separator + tail.replace("_", "")


def find_annotation_file(root: str | os.PathLike, kind: Literal["pairs", "annotation"], split: Literal["train", "test"]) -> Path:
    """Find `fasion-resize-{kind}-{split}.csv` (or the `fashion-` spelling) in root; UserError naming both if absent."""
    if kind not in ("pairs", "annotation") or split not in ("train", "test"):
        raise UserError(f"find_annotation_file: expected kind pairs|annotation and split train|test; got {kind!r}, {split!r}")
    root = Path(root)
    names = [f"fasion-resize-{kind}-{split}.csv", f"fashion-resize-{kind}-{split}.csv"]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise UserError(
        f"no {kind} file for the {split} split in {root}: tried {names[0]} and {names[1]}; "
        f"point the root at the DeepFashion folder that holds them (generate one with `atelier synth`)"
    )


def _cells(path: Path, number: int, line: str) -> list[str]:
    """The stripped cells of one CSV line (quotes as the csv module reads them)."""
    try:
        return [cell.strip() for cell in next(csv.reader([line]), [])]
    except csv.Error as error:
        raise UserError(f"{path}, line {number}: not a CSV line ({error}); expected 'from,to'") from None


def _iter_pairs(path: Path) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, from, to) for each pair of a `from,to` CSV, checking the header and the field count."""
    lines = text_lines(path, "pairs CSV (header from,to)")
    header = next(lines, None)
    if header is None or _cells(path, 1, header[1]) != PAIRS_HEADER:
        found = header[1] if header else "an empty file"
        raise UserError(f"{path}, line 1: expected the header 'from,to'; found {found!r}; fix the first line")
    for number, line in lines:
        cells = _cells(path, number, line)
        if len(cells) != 2 or not all(cells):
            raise UserError(f"{path}, line {number}: expected two image names 'from,to'; found {line!r}")
        yield number, cells[0], cells[1]


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a DeepFashion pairs CSV (header `from,to`) into a list of (source name, target name)."""
    return [(source, target) for _, source, target in _iter_pairs(Path(path))]


def _parse_coordinates(path: Path, number: int, field_name: str, text: str) -> list[int]:
    """Parse one JSON list of 18 integers, raising UserError naming file, line and field when it is not one."""
    where = f"{path}, line {number}, field {field_name}"
    values = parse_json(text, f"{where}: expected a JSON list of {NUM_KEYPOINTS} integers; found {text[:60]!r}")
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f"{where}: expected a JSON list of integers; found {text[:60]!r}")
    if len(values) != NUM_KEYPOINTS:
        raise UserError(f"{where}: expected {NUM_KEYPOINTS} values (OpenPose COCO order, -1 for missing); found {len(values)}")
    return values


def read_annotations(path: str | os.PathLike, frame_hw: tuple[int, int] = FRAME_HW) -> dict[str, np.ndarray]:
    """Read a keypoint CSV (`name:keypoints_y:keypoints_x`) into name -> int32 (18, 2) of (y, x), -1 missing; every
    joint must lie in the keypoints' `frame_hw` (within pose.FRAME_MARGIN)."""
    path = Path(path)
    lines = text_lines(path, "annotation CSV (header name:keypoints_y:keypoints_x)")
    header = next(lines, None)
    if header is None or header[1].split(":") != ANNOTATION_HEADER:
        found = header[1] if header else "an empty file"
        raise UserError(f"{path}, line 1: expected the header 'name:keypoints_y:keypoints_x'; found {found!r}; fix the first line")
    annotations: dict[str, np.ndarray] = {}
    for number, line in lines:
        cells = [cell.strip() for cell in line.split(":")]
        if len(cells) != 3:
            raise UserError(f"{path}, line {number}: expected 3 fields separated by ':' (name:keypoints_y:keypoints_x); found {len(cells)}")
        name, ys, xs = cells
        columns = [_parse_coordinates(path, number, "keypoints_y", ys), _parse_coordinates(path, number, "keypoints_x", xs)]
        checked = validate_keypoints(list(zip(*columns)), f"{path}, line {number} ({name})", frame_hw)
        keypoints = np.where(checked < 0, -1, checked).astype(np.int32)  # any negative means missing: stored as -1
        if name in annotations and not np.array_equal(annotations[name], keypoints):
            raise UserError(f"{path}, line {number}: {name} is annotated twice with different keypoints; keep one line")
        annotations[name] = keypoints
    return annotations


@dataclass
class DeepFashionSplit:
    """One split of a DeepFashion pose-transfer folder: image folder, image names, pairs and keypoints."""

    root: Path
    split: Literal["train", "test"]
    image_dir: Path
    names: list[str]
    pairs: list[tuple[str, str]]
    annotations: dict[str, np.ndarray] = field(repr=False)
    pairs_file: Path
    annotation_file: Path

    def image_path(self, name: str) -> Path:
        """Path of the image called `name`."""
        return self.image_dir / name

    def keypoints(self, name: str) -> np.ndarray:
        """Keypoints (18, 2) int32 (y, x) of image `name` in the 256x176 frame."""
        return self.annotations[name]


def find_image_dir(root: str | os.PathLike, split: str, required: bool = True) -> Path | None:
    """The split's image folder: `{split}_highres`, else `{split}_256x176`; when neither is there, UserError (None
    unless `required`)."""
    candidates = [Path(root) / pattern.format(split=split) for pattern in IMAGE_FOLDERS]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if not required:
        return None
    tried = " and ".join(c.name for c in candidates)
    raise UserError(f"no image folder for the {split} split in {root}: tried {tried}; point the root at the DeepFashion folder")


def split_names(root: str | os.PathLike, split: str, image_dir: Path) -> list[str]:
    """The split's image names: `{split}.lst` when there is one (every name must be in `image_dir`), else the image
    files in `image_dir`, sorted."""
    on_disk = [path.name for path in list_images(image_dir, recursive=False)]
    list_file = Path(root) / f"{split}.lst"
    if not list_file.is_file():
        return on_disk
    names, present = read_list(list_file), set(on_disk)
    absent = [name for name in names if name not in present]
    if absent:
        raise missing_error(list_file, absent, str(image_dir))
    return names


def load_split(root: str | os.PathLike, split: Literal["train", "test"], check_images: bool = True) -> DeepFashionSplit:
    """Load one split and check that every pair names an annotated image (present on disk when check_images)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"DeepFashion root {root} is not a folder; pass the folder holding {split}_highres/ and the CSVs")
    image_dir = find_image_dir(root, split)
    pairs_file = find_annotation_file(root, "pairs", split)
    annotation_file = find_annotation_file(root, "annotation", split)
    annotations = read_annotations(annotation_file)
    on_disk = {p.name for p in image_dir.iterdir()} if check_images else None
    list_file = root / f"{split}.lst"
    names = read_list(list_file) if list_file.is_file() else sorted(on_disk or annotations)
    absent = [name for name in names if on_disk is not None and name not in on_disk]
    if absent:
        raise missing_error(list_file, absent, str(image_dir))
    pairs = []
    for number, source, target in _iter_pairs(pairs_file):
        for name in (source, target):
            if name not in annotations:
                raise UserError(
                    f"{pairs_file}, line {number}: {name} has no keypoints in {annotation_file.name}; "
                    f"add its annotation line or drop the pair"
                )
            if on_disk is not None and name not in on_disk:
                raise UserError(
                    f"{pairs_file}, line {number}: image {name} is missing from {image_dir}; "
                    f"copy it there or drop the pair"
                )
        pairs.append((source, target))
    logger.debug("DeepFashion %s: %d images, %d pairs from %s", split, len(names), len(pairs), root)
    return DeepFashionSplit(root, split, image_dir, names, pairs, annotations, pairs_file, annotation_file)
