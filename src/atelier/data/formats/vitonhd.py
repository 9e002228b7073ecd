"""Reader for VITON-HD (Choi et al. 2021), the virtual try-on benchmark, as released, with MGD's additions.

Layout under a root folder:
    train_pairs.txt, test_pairs.txt   `person.jpg cloth.jpg` per line, whitespace separated, blank lines ignored
                                      (train pairs a person with its own garment; test_pairs.txt is already unpaired)
    train/, test/                     one folder per split, each holding:
        image/<person>.jpg                    the person, 768x1024
        cloth/<cloth>.jpg                     the garment alone on white
        cloth-mask/<cloth>.jpg                the garment's mask (the garment's size)
        agnostic-v3.2/<person>.jpg            the person with the garment region greyed out
        agnostic-mask/<stem>_mask.png         that region's mask (the person's size)
        image-densepose/<person>.jpg          the DensePose rendering
        image-parse-v3/<stem>.png             the human parsing map
        openpose_json/<stem>_keypoints.json   OpenPose BODY_25: people[0].pose_keypoints_2d, 25 joints x (x, y,
                                              confidence) in the 768x1024 frame
      and, from MGD (Baldrati et al. 2023), when present:
        im_sketch/<stem>.png                  the garment sketch of the paired setting
        im_sketch_unpaired/<stem>_<cloth stem>.png
                                              the sketch of another garment for the unpaired setting
    captions.json                     MGD: {garment id (5 digits, no `_00`): [noun phrases]} (at the root or in a split)

A <stem> is a file name without its suffix (00006_00.jpg -> 00006_00). Every malformed file is one UserError naming
the file (and line or field) and saying what was expected.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atelier.data.formats.text import parse_json, read_text
from atelier.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SETTINGS = ("paired", "unpaired")
JOINTS = 25  # OpenPose BODY_25
FRAME = (768, 1024)  # width x height of the released images and of the keypoints
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a file name inside its folder: no path, nothing hidden
PAIR_LINE = "person.jpg cloth.jpg"
CAPTIONS = "an object {garment id: [noun phrases]}"


def kind(value) -> str:
    """How a JSON value reads in an error: "text", "a number", "an object", "null", ..."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    names = {str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def stem(name: str) -> str:
    """A file name without its suffix: 00006_00.jpg -> 00006_00."""
    return Path(name).stem


def garment_id(name: str) -> str:
    """The key of a garment in MGD's captions.json: the stem without its `_00` suffix (00006_00.jpg -> 00006)."""
    return stem(name).rsplit("_", 1)[0] if "_" in stem(name) else stem(name)


def check_name(name: str, where: str, expected: str) -> str:
    """`name` when it is a plain file name (no folder, not hidden); else UserError starting with `where`."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise UserError(f"{where}: {name[:60]!r} is not a file name; expected {expected}")
    return name


@dataclass(frozen=True)
class TryOnPair:
    """One listed pair: the person image's and the garment image's file names, and the line of the pairs file it
    came from (0 for a pair made by the reader, such as the paired setting's)."""

    person: str
    garment: str
    line: int = field(default=0, compare=False)


def pair_lines(path: Path, what: str, counts: tuple[int, ...], expected: str):
    """(line number, fields, where) of each non-blank line of a whitespace-separated pairs file (`what` names it in a
    read error; `where` is "FILE, line N"); UserError for a line of a field count outside `counts`."""
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {number}"
        if len(fields) not in counts:
            raise UserError(f"{where}: {len(fields)} field{'' if len(fields) == 1 else 's'}; expected "
                            f"{' or '.join(map(str, counts))}, {expected}")
        yield number, fields, where


def read_pairs(path: str | os.PathLike) -> list[TryOnPair]:
    """The pairs of a VITON-HD pairs file (`person.jpg cloth.jpg` per line, blank lines ignored), in file order.
    UserError naming the file and the line for a line of other than 2 fields or a field that is not a file name."""
    path = Path(path)
    pairs = []
    for number, fields, where in pair_lines(path, "VITON-HD pairs file", (2,), f"'{PAIR_LINE}'"):
        person, garment = (check_name(name, where, f"'{PAIR_LINE}'") for name in fields)
        pairs.append(TryOnPair(person, garment, number))
    return pairs


def image_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) of an image from its header alone (no decode); UserError naming the file when it is missing
    or no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found; check the dataset folder") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise UserError(f"{path}: the {what} is not a readable image ({type(error).__name__}); check the file") from None


def check_same_size(mask: Path, image: Path, what: str) -> Path:
    """`mask` when its size is `image`'s (header reads only); else UserError naming both files and both sizes."""
    mask_size, image_size_ = image_size(mask, what), image_size(image, "image")
    if mask_size != image_size_:
        raise UserError(f"{mask}: the {what} is {mask_size[0]}x{mask_size[1]} but its image {image.name} is "
                        f"{image_size_[0]}x{image_size_[1]}; expected the {what} at its image's size")
    return mask


def finite_number(value, where: str) -> float:
    """`value` as a finite float; UserError (`where` names file and index) for text, null, booleans, NaN, inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} is {kind(value) if not isinstance(value, str) else repr(value[:20])}; "
                        "expected a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UserError(f"{where} is {value if isinstance(value, float) else 'a huge integer'}; expected a finite number")
    return number


def read_openpose_json(path: str | os.PathLike, joints: int = JOINTS) -> np.ndarray:
    """The first person's keypoints of an OpenPose JSON file as a (joints, 3) float32 array of (x, y, confidence),
    in the image's pixel frame (OpenPose writes 0, 0, 0 for a joint it did not find). UserError naming the file for
    anything but an object whose "people" list starts with an object holding "pose_keypoints_2d", a list of
    joints x 3 finite numbers."""
    path = Path(path)
    expected = f'{{"people": [{{"pose_keypoints_2d": [{joints} x (x, y, confidence)]}}]}}'
    data = parse_json(read_text(path, "OpenPose keypoint JSON"), f"{path}: not valid JSON; expected {expected}")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the file holds {kind(data)}; expected an OpenPose object {expected}")
    people = data.get("people")
    if not isinstance(people, list) or not people:
        found = "no people (an empty list)" if isinstance(people, list) else (
            'no "people"' if "people" not in data else f'"people" is {kind(people)}')
        raise UserError(f"{path}: {found}; expected one person detected, {expected}")
    person = people[0]
    values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
    if not isinstance(values, list):
        found = f"people[0] is {kind(person)}" if not isinstance(person, dict) else (
            'people[0] has no "pose_keypoints_2d"' if "pose_keypoints_2d" not in person else
            f"people[0].pose_keypoints_2d is {kind(values)}")
        raise UserError(f"{path}: {found}; expected {expected}")
    if len(values) != joints * 3:
        raise UserError(f"{path}: people[0].pose_keypoints_2d has {len(values)} numbers; expected {joints * 3} "
                        f"({joints} joints x (x, y, confidence))")
    numbers = [finite_number(value, f"{path}: people[0].pose_keypoints_2d[{index}]") for index, value in enumerate(values)]
    return np.asarray(numbers, dtype=np.float32).reshape(joints, 3)


def read_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """MGD's captions file ({garment id: [noun phrases]}, in file order, phrases stripped). UserError naming the
    file and the key for anything but an object of lists of text."""
    path = Path(path)
    data = parse_json(read_text(path, "captions file"), f"{path}: not valid JSON; expected {CAPTIONS}")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the file holds {kind(data)}; expected {CAPTIONS}")
    captions = {}
    for key, phrases in data.items():
        where = f"{path}: key {key[:40]!r}"
        if not isinstance(phrases, list):
            raise UserError(f"{where} holds {kind(phrases)}; expected a list of noun phrases (text)")
        for index, phrase in enumerate(phrases):
            if not isinstance(phrase, str):
                raise UserError(f"{where}, phrase [{index}] is {kind(phrase)}; expected text")
        captions[key] = [phrase.strip() for phrase in phrases]
    return captions


# The per-split folders and how each names a pair's file: "person" / "garment" are the listed names, "stem" the
# person's stem and "garment_stem" the garment's.
FOLDERS = {
    "image": "{person}",
    "cloth": "{garment}",
    "cloth-mask": "{garment}",
    "agnostic-v3.2": "{person}",
    "agnostic-mask": "{stem}_mask.png",
    "image-densepose": "{person}",
    "image-parse-v3": "{stem}.png",
    "openpose_json": "{stem}_keypoints.json",
    "im_sketch": "{stem}.png",
    "im_sketch_unpaired": "{stem}_{garment_stem}.png",
}
MGD_FOLDERS = ("im_sketch", "im_sketch_unpaired")  # checked only where the dataset has them


@dataclass(frozen=True)
class VitonHDSplit:
    """One split of VITON-HD: its folder, and the pairs its pairs file lists (in file order)."""

    root: Path
    split: str
    pairs: tuple[TryOnPair, ...]

    @property
    def folder(self) -> Path:
        return self.root / self.split

    def setting(self, setting: str) -> list[TryOnPair]:
        """The pairs of a test setting: "unpaired" is what the pairs file lists (VITON-HD's test_pairs.txt is
        already unpaired); "paired" gives each listed person its own garment (cloth/ holds it under the person's
        name)."""
        if setting not in SETTINGS:
            raise UserError(f"VITON-HD: unknown setting {setting!r}; expected paired or unpaired")
        if setting == "unpaired":
            return list(self.pairs)
        return list(dict.fromkeys(TryOnPair(pair.person, pair.person, pair.line) for pair in self.pairs))

    def path(self, folder: str, pair: TryOnPair) -> Path:
        """The file of `pair` in `folder` (a key of FOLDERS), whether or not it exists."""
        if folder not in FOLDERS:
            raise UserError(f"VITON-HD: unknown folder {folder!r}; expected one of {', '.join(FOLDERS)}")
        name = FOLDERS[folder].format(person=pair.person, garment=pair.garment, stem=stem(pair.person),
                                      garment_stem=stem(pair.garment))
        return self.folder / folder / name

    def image(self, pair: TryOnPair) -> Path:
        return self.path("image", pair)

    def cloth(self, pair: TryOnPair) -> Path:
        return self.path("cloth", pair)

    def cloth_mask(self, pair: TryOnPair) -> Path:
        """The garment's mask; UserError when its size is not the garment image's."""
        return check_same_size(self.path("cloth-mask", pair), self.cloth(pair), "garment mask")

    def agnostic(self, pair: TryOnPair) -> Path:
        return self.path("agnostic-v3.2", pair)

    def agnostic_mask(self, pair: TryOnPair) -> Path:
        """The agnostic mask; UserError when its size is not the person image's."""
        return check_same_size(self.path("agnostic-mask", pair), self.image(pair), "agnostic mask")

    def densepose(self, pair: TryOnPair) -> Path:
        return self.path("image-densepose", pair)

    def parse(self, pair: TryOnPair) -> Path:
        """The parsing map; UserError when its size is not the person image's."""
        return check_same_size(self.path("image-parse-v3", pair), self.image(pair), "parse map")

    def keypoints_file(self, pair: TryOnPair) -> Path:
        return self.path("openpose_json", pair)

    def sketch(self, pair: TryOnPair, setting: str = "paired") -> Path:
        """MGD's garment sketch: im_sketch/ for the paired setting, im_sketch_unpaired/ for the unpaired one."""
        if setting not in SETTINGS:
            raise UserError(f"VITON-HD: unknown setting {setting!r}; expected paired or unpaired")
        return self.path("im_sketch" if setting == "paired" else "im_sketch_unpaired", pair)

    def keypoints(self, person: str) -> np.ndarray:
        """The (25, 3) OpenPose keypoints (x, y, confidence) of a person, by its stem or image name."""
        name = check_name(stem(person), "VITON-HD keypoints", "a person's image name or stem such as 00006_00")
        return read_openpose_json(self.folder / "openpose_json" / f"{name}_keypoints.json")

    def captions_file(self) -> Path | None:
        """MGD's captions.json: in the split folder, else at the root; None when neither has one."""
        for path in (self.folder / "captions.json", self.root / "captions.json"):
            if path.is_file():
                return path
        return None

    def captions(self) -> dict[str, list[str]]:
        """MGD's captions ({garment id: [noun phrases]}); UserError when the dataset has no captions.json."""
        path = self.captions_file()
        if path is None:
            raise UserError(f"{self.root / 'captions.json'}: captions file not found (nor in {self.folder}); the "
                            "captions come with MGD's multimodal VITON-HD")
        return read_captions(path)

    def check(self) -> dict[str, Path]:
        """The first missing file of each folder, over every pair (both settings for the sketches), as
        {folder: path}; empty when nothing is missing. MGD's folders are checked only where they exist."""
        missing: dict[str, Path] = {}
        paired = self.setting("paired")
        for folder in FOLDERS:
            if folder in MGD_FOLDERS and not (self.folder / folder).is_dir():
                continue
            pairs = paired if folder == "im_sketch" else self.pairs
            for pair in pairs:
                path = self.path(folder, pair)
                if not path.is_file():
                    missing[folder] = path
                    break
        return missing


def pairs_file(root: str | os.PathLike, split: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"VITON-HD: unknown split {split!r}; expected train or test")
    return Path(root) / f"{split}_pairs.txt"


def load_vitonhd(root: str | os.PathLike, split: str, check_images: bool = True) -> VitonHDSplit:
    """The pairs of one split of a VITON-HD root. With check_images, UserError naming the pairs file and line for
    the first pair whose person (image/) or garment (cloth/) image does not exist; the other folders are for
    `check()`."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"VITON-HD root {root} is not a folder; pass the folder holding train_pairs.txt, "
                        "test_pairs.txt, train/ and test/")
    path = pairs_file(root, split)
    pairs = read_pairs(path)
    data = VitonHDSplit(root, split, tuple(pairs))
    if check_images:
        for pair in pairs:
            for what, image in (("person", data.image(pair)), ("garment", data.cloth(pair))):
                if not image.is_file():
                    raise UserError(f"{path}, line {pair.line}: the {what} image {image.name} does not exist in "
                                    f"{image.parent}; add it or remove the line")
    logger.debug("VITON-HD %s: %d pairs", split, len(pairs))
    return data
