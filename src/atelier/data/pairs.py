"""Pose-transfer pairs on the real layouts (DeepFashion In-shop as CFLD/PIDM/DPTN use it, Market-1501 as PATN does).

Layouts (docs/data-formats.md):
    deepfashion  {split}_highres/ (or {split}_256x176/), fasion-resize-{pairs,annotation}-{split}.csv, keypoints in
                 the 256x176 frame; read by `atelier.data.formats.deepfashion.load_split` (FashionSynth's
                 `deepfashion/` folder is this layout).
    market       {split}/ (the renamed bounding_box_{split}/, also accepted), market-pairs-{split}.csv (header
                 `from,to`), market-annotation-{split}.csv (`name:keypoints_y:keypoints_x`), keypoints in the 128x64
                 frame.

`PosePairs` serves what CFLD (Lu et al., CVPR 2024) trains on: for a pair (source, target), the target image and the
source image at the generated size (the source is also reconstructed from its own pose), the source at the appearance
encoder's size, and the 21-channel pose maps (RGB skeleton + 18 heatmaps) of both poses at the pose-adapter's size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from atelier.data.formats.deepfashion import load_split, read_annotations, read_pairs
from atelier.data.formats.text import parse_json, read_text
from atelier.data.pose import FRAME_HW, NUM_KEYPOINTS, cfld_pose_map, validate_keypoints
from atelier.data.transforms import load_image_tensor
from atelier.errors import UserError

logger = logging.getLogger(__name__)

Layout = Literal["deepfashion", "market"]
MARKET_FRAME_HW: tuple[int, int] = (128, 64)


@dataclass
class PairsSplit:
    """One split of a pose-transfer folder: where the images are, the pairs, and every image's keypoints."""

    layout: Layout
    split: str
    image_dir: Path
    pairs: list[tuple[str, str]]
    annotations: dict[str, np.ndarray]
    frame_hw: tuple[int, int]  # the frame the keypoints are given in
    pairs_file: Path
    annotation_file: Path


def detect_layout(root: str | os.PathLike) -> Layout:
    """`market` when the folder holds market-pairs-*.csv, else `deepfashion`."""
    return "market" if any(Path(root).glob("market-pairs-*.csv")) else "deepfashion"


def _load_market(root: Path, split: str, check_images: bool) -> PairsSplit:
    """Market-1501 in PATN's layout; every pair must name annotated images (present on disk when check_images)."""
    pairs_file, annotation_file = root / f"market-pairs-{split}.csv", root / f"market-annotation-{split}.csv"
    for path in (pairs_file, annotation_file):
        if not path.is_file():
            raise UserError(f"{path} not found: a Market-1501 folder holds market-pairs-{split}.csv and "
                            f"market-annotation-{split}.csv (PATN's files) beside {split}/")
    image_dir = next((d for d in (root / split, root / f"bounding_box_{split}") if d.is_dir()), None)
    if image_dir is None:
        raise UserError(f"no image folder for the {split} split in {root}: tried {split}/ and bounding_box_{split}/")
    annotations = read_annotations(annotation_file, MARKET_FRAME_HW)
    pairs = read_pairs(pairs_file)
    on_disk = {p.name for p in image_dir.iterdir()} if check_images else None
    for number, pair in enumerate(pairs, start=1):
        for name in pair:
            if name not in annotations:
                raise UserError(f"{pairs_file}, pair {number}: {name} has no keypoints in {annotation_file.name}; "
                                "add its annotation line or drop the pair")
            if on_disk is not None and name not in on_disk:
                raise UserError(f"{pairs_file}, pair {number}: image {name} is missing from {image_dir}; copy it there or drop the pair")
    return PairsSplit("market", split, image_dir, pairs, annotations, MARKET_FRAME_HW, pairs_file, annotation_file)


def load_pairs(root: str | os.PathLike, split: Literal["train", "test"], layout: Layout | Literal["auto"] = "auto",
               check_images: bool = True) -> PairsSplit:
    """Load one split of a DeepFashion or Market-1501 pose-transfer folder (layout detected from the CSV names)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"pairs root {root} is not a folder; pass a DeepFashion (or Market-1501) folder, e.g. FashionSynth's deepfashion/")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "market":
        return _load_market(root, split, check_images)
    found = load_split(root, split, check_images=check_images)
    return PairsSplit("deepfashion", split, found.image_dir, found.pairs, found.annotations, FRAME_HW,
                      found.pairs_file, found.annotation_file)


KEYPOINT_JSON = '{"keypoints_y": [18 numbers], "keypoints_x": [18 numbers]} or a list of 18 [y, x] pairs (-1 = missing)'


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def keypoints_from_json(data, where: str, frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Keypoints (18, 2) float32 (y, x) from parsed keypoint JSON (either form of KEYPOINT_JSON); UserError naming
    `where` and the key or index at fault: a missing key, a string, a ragged list, NaN, a joint outside `frame_hw`."""
    if isinstance(data, dict):
        columns = []
        for key in ("keypoints_y", "keypoints_x"):
            values = data.get(key)
            if not isinstance(values, list):
                found = "missing" if key not in data else f"a {type(values).__name__}"
                raise UserError(f"{where}: key {key} is {found}; expected {KEYPOINT_JSON}")
            bad = next((i for i, value in enumerate(values) if not _is_number(value)), None)
            if bad is not None:
                raise UserError(f"{where}: {key}[{bad}] is {values[bad]!r}; expected a number (-1 for a missing joint)")
            if len(values) != NUM_KEYPOINTS:
                raise UserError(f"{where}: expected {NUM_KEYPOINTS} joints in {key} (OpenPose COCO order); found {len(values)}")
            columns.append(values)
        pairs = list(zip(*columns))
    elif isinstance(data, list):
        bad = next((i for i, pair in enumerate(data) if not (isinstance(pair, list) and len(pair) == 2
                                                           and all(map(_is_number, pair)))), None)
        if bad is not None:
            raise UserError(f"{where}: entry [{bad}] is {data[bad]!r:.40}; expected a [y, x] pair of numbers "
                            f"(the file: {KEYPOINT_JSON})")
        pairs = data
    else:
        raise UserError(f"{where}: holds a JSON {type(data).__name__}; expected {KEYPOINT_JSON}")
    return validate_keypoints(pairs, where, frame_hw)


def _keypoints_from_row(row: str, frame_hw: tuple[int, int] | None) -> tuple[str, np.ndarray]:
    """An annotation CSV row `name:[ys]:[xs]` (or `[ys]:[xs]`) -> (name, keypoints)."""
    cells = [cell.strip() for cell in row.split(":")]
    if len(cells) == 2:
        cells = ["pose", *cells]
    if len(cells) != 3:
        raise UserError(f"--target-pose {row[:60]!r}: expected an annotation row name:[18 y values]:[18 x values]")
    name, ys, xs = cells
    where = f"--target-pose row {name!r}"  # quoted: a name is user text, and the message must stay one line
    columns = {key: parse_json(text, f"{where}, {key}: not valid JSON; expected a list of {NUM_KEYPOINTS} numbers")
               for key, text in (("keypoints_y", ys), ("keypoints_x", xs))}
    return name, keypoints_from_json(columns, where, frame_hw)


def read_target_pose(spec: str, annotation_file: str | os.PathLike | None = None,
                     frame_hw: tuple[int, int] | None = None) -> tuple[str, np.ndarray]:
    """A target pose given as a keypoint JSON file, an annotation CSV row, or an image name/path with an annotation.

    Returns (name, float32 (18, 2) keypoints (y, x), -1 missing). For an image, the keypoints come from
    `annotation_file`, else from the annotation CSVs of the folder above the image (the DeepFashion/Market layout).
    `frame_hw`: the frame the keypoints must lie in (pose.FRAME_MARGIN allowed); None checks only their form.
    """
    path = Path(spec)
    if path.suffix.lower() == ".json":
        where = f"--target-pose {spec}"
        data = parse_json(read_text(path, "keypoint JSON"), f"{where}: not valid JSON; expected {KEYPOINT_JSON}")
        return path.stem, keypoints_from_json(data, where, frame_hw)
    if ":" in spec and "[" in spec:
        name, keypoints = _keypoints_from_row(spec, frame_hw)
        return Path(name).stem or "pose", keypoints
    candidates = [Path(annotation_file)] if annotation_file else sorted(path.resolve().parent.parent.glob("*annotation*.csv"))
    for candidate in candidates:
        annotations = read_annotations(candidate, frame_hw or FRAME_HW)
        if path.name in annotations:
            return path.stem, annotations[path.name].astype(np.float32)
    where = ", ".join(str(c) for c in candidates) or f"no *annotation*.csv beside {path.parent}"
    raise UserError(f"--target-pose {spec}: no keypoints for {path.name} ({where}); pass a keypoint JSON, an annotation "
                    "row name:[ys]:[xs], or --annotations CSV holding this image")


@dataclass
class PosePair:
    """One training/test example: images in [-1, 1] (3, H, W), pose maps float (21, H, W)."""

    source_name: str | list[str]  # a list in a stacked batch
    target_name: str | list[str]
    target: torch.Tensor  # at the generated size
    source: torch.Tensor  # at the generated size (self-reconstruction)
    appearance: torch.Tensor  # the source at the appearance encoder's size
    source_pose: torch.Tensor
    target_pose: torch.Tensor


class PosePairs:
    """The pairs of a split as CFLD consumes them (sizes are (height, width))."""

    def __init__(self, split: PairsSplit, image_hw: tuple[int, int], appearance_hw: tuple[int, int],
                 pose_hw: tuple[int, int], max_pairs: int | None = None) -> None:
        self.split = split
        self.image_hw, self.appearance_hw, self.pose_hw = tuple(image_hw), tuple(appearance_hw), tuple(pose_hw)
        self.pairs = split.pairs[:max_pairs] if max_pairs else list(split.pairs)
        if not self.pairs:
            raise UserError(f"{split.pairs_file}: the file lists no pairs")

    def __len__(self) -> int:
        return len(self.pairs)

    def names(self) -> list[str]:
        """Every image named by a pair, each once, in first-seen order."""
        return list(dict.fromkeys(name for pair in self.pairs for name in pair))

    def image(self, name: str, size_hw: tuple[int, int]) -> torch.Tensor:
        """Image `name` resized (bicubic) to size_hw, (3, H, W) in [-1, 1]."""
        return load_image_tensor(self.split.image_dir / name, size_hw)

    def pose_map(self, name: str) -> torch.Tensor:
        """CFLD's 21-channel pose map of image `name` at the pose size."""
        return cfld_pose_map(self.split.annotations[name], self.pose_hw, self.split.frame_hw)

    def __getitem__(self, index: int) -> PosePair:
        source, target = self.pairs[index]
        return PosePair(
            source_name=source,
            target_name=target,
            target=self.image(target, self.image_hw),
            source=self.image(source, self.image_hw),
            appearance=self.image(source, self.appearance_hw),
            source_pose=self.pose_map(source),
            target_pose=self.pose_map(target),
        )


def output_name(source: str, target: str) -> str:
    """`<source stem>_2_<target stem>.png`: the MCLD/CFLD release naming that `atelier evaluate` matches (both
    pose-transfer methods name their outputs so)."""
    return f"{Path(source).stem}_2_{Path(target).stem}.png"


def stack_pairs(items: list[PosePair]) -> PosePair:
    """Stack examples into one batch (names become lists, tensors gain a batch dimension)."""
    return PosePair(
        source_name=[item.source_name for item in items],
        target_name=[item.target_name for item in items],
        target=torch.stack([item.target for item in items]),
        source=torch.stack([item.source for item in items]),
        appearance=torch.stack([item.appearance for item in items]),
        source_pose=torch.stack([item.source_pose for item in items]),
        target_pose=torch.stack([item.target_pose for item in items]),
    )
